// Parity of the Hookline construct with template.yaml: every expectation is read from the
// template, so a change to either definition that the other lacks fails here. Two
// settings are compared: the template's defaults, and other values for every parameter.
import { strict as assert } from 'node:assert';
import { describe, test } from 'node:test';
import { App, Duration, SecretValue, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sns from 'aws-cdk-lib/aws-sns';
import { Hookline, HooklineProps } from '../lib';
import { Json, loadTemplate, resolveCdk, resolveSam, resourceNames } from './cfn';

const OPERATOR_KEY = 'hkop_' + 'k'.repeat(40);
const CREDENTIALS_KEY = 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=';
const TOPIC = 'arn:aws:sns:us-east-1:111111111111:hookline-alarms';

interface Setting {
  readonly name: string;
  readonly params: Record<string, Json>;
  readonly props: (stack: Stack) => Omit<HooklineProps, 'operatorKey'>;
}

const SETTINGS: Setting[] = [
  { name: 'defaults', params: {}, props: () => ({}) },
  {
    name: 'every parameter set',
    params: {
      RetrySchedule: '0s,30s,10m,1h',
      RetentionDays: 90,
      AllowHttp: 'true',
      DisableAfter: '12h',
      FailingAfterAttempts: 'off',
      DeliverBatchSize: 5,
      DeliverMaxConcurrency: 50,
      DeliverBatchingWindow: 2,
      ApiReservedConcurrency: 20,
      IngestReservedConcurrency: 300,
      DeliverReservedConcurrency: 60,
      ApiThrottlingRateLimit: 2000,
      ApiThrottlingBurstLimit: 1000,
      DeliverRequestLimit: 64,
      DeliverTimeout: 120,
      AlarmTopicArn: TOPIC,
      MetricsNamespace: 'Acme/Hookline',
      LogRetentionDays: 90,
      QueueAgeAlarmSeconds: 3600,
      DeliveryFailureAlarmPercent: 40,
      Api5xxAlarmPercent: 10,
      PortalFrameAncestors: 'https://dashboard.example.com',
      PortalTitle: 'Acme webhooks',
      PortalLogoUrl: 'https://cdn.example.com/logo.png',
      PortalAccent: '#0a7d3b',
      CredentialsKey: CREDENTIALS_KEY,
    },
    props: (stack) => ({
      retrySchedule: [Duration.seconds(0), Duration.seconds(30), Duration.minutes(10), Duration.hours(1)],
      retentionDays: 90,
      allowHttp: true,
      disableAfter: Duration.hours(12),
      failingAfterAttempts: 'off',
      deliverBatchSize: 5,
      deliverMaxConcurrency: 50,
      deliverBatchingWindow: Duration.seconds(2),
      apiReservedConcurrency: 20,
      ingestReservedConcurrency: 300,
      deliverReservedConcurrency: 60,
      apiThrottle: { rateLimit: 2000, burstLimit: 1000 },
      deliverRequestLimit: 64,
      deliverTimeout: Duration.seconds(120),
      alarmTopic: sns.Topic.fromTopicArn(stack, 'Topic', TOPIC),
      metricsNamespace: 'Acme/Hookline',
      logRetention: logs.RetentionDays.THREE_MONTHS,
      queueAgeAlarmThreshold: Duration.hours(1),
      deliveryFailureAlarmPercent: 40,
      api5xxAlarmPercent: 10,
      portalFrameAncestors: 'https://dashboard.example.com',
      portalTitle: 'Acme webhooks',
      portalLogoUrl: 'https://cdn.example.com/logo.png',
      portalAccent: '#0a7d3b',
      credentialsKey: SecretValue.unsafePlainText(CREDENTIALS_KEY),
    }),
  },
];

const sam = loadTemplate();
const samFunctions = Object.keys(sam.Resources).filter((k) => sam.Resources[k].Type === 'AWS::Serverless::Function');

/** The construct's template, synthesized without building the functions. */
function synth(setting: Setting): { cdk: Json; resolve: (n: Json) => Json; byName: (name: string) => Json } {
  const app = new App();
  const stack = new Stack(app, 'Parity');
  stack.node.setContext('aws:cdk:bundling-stacks', []);
  const hookline = new Hookline(stack, 'Hookline', {
    ...setting.props(stack),
    operatorKey: SecretValue.unsafePlainText(OPERATOR_KEY),
  });
  const cdk = Template.fromStack(stack).toJSON();
  const names = resourceNames(hookline);
  const ids: Record<string, string> = {};
  for (const [logicalId, name] of Object.entries(names)) ids[name] = logicalId;
  const byName = (name: string) => {
    assert.ok(ids[name], `the construct has no resource ${name}`);
    return cdk.Resources[ids[name]];
  };
  return { cdk, resolve: resolveCdk(names), byName };
}

const scalar = (v: Json) => (typeof v === 'object' ? v : String(v));
const scalars = (o: Record<string, Json>) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, scalar(v)]));

/** The SAM-generated role's managed policies, for a function without a Role of its own. */
const SAM_ROLE_POLICIES = ['AWSLambdaBasicExecutionRole', 'AWSXrayWriteOnlyAccess'];

/** `action on resource` pairs of a list of statements; actions lower-cased. */
function grants(statements: Json[]): string[] {
  const out = new Set<string>();
  for (const s of statements) {
    assert.equal(s.Effect, 'Allow');
    const actions = [s.Action].flat();
    const resources = [s.Resource].flat();
    for (const a of actions) for (const r of resources) out.add(`${String(a).toLowerCase()} on ${r}`);
  }
  return [...out].sort();
}

const basename = (arn: string) => arn.split('/').pop()!;

for (const setting of SETTINGS) {
  describe(`parity with template.yaml (${setting.name})`, () => {
    const params = { OperatorKey: OPERATOR_KEY, ...setting.params };
    const samResolve = resolveSam(sam, params);
    const { cdk, resolve, byName } = synth(setting);
    const globals = sam.Globals.Function;

    if (setting.name === 'every parameter set') {
      test('sets every parameter of the template', () => {
        const unset = Object.keys(sam.Parameters).filter((p) => p !== 'OperatorKey' && !(p in setting.params));
        assert.deepEqual(unset, []);
      });
    }

    test('the same resource types', () => {
      const count = (resources: Json, type: string) =>
        Object.values<Json>(resources).filter((r) => r.Type === type).length;
      const expected: Record<string, number> = {};
      const bump = (type: string, n = 1) => (expected[type] = (expected[type] ?? 0) + n);
      for (const r of Object.values<Json>(sam.Resources)) {
        if (r.Type === 'AWS::Serverless::Function') {
          bump('AWS::Lambda::Function');
          if (!r.Properties.Role) bump('AWS::IAM::Role');
          for (const ev of Object.values<Json>(r.Properties.Events ?? {})) {
            if (ev.Type === 'SQS') bump('AWS::Lambda::EventSourceMapping');
          }
        } else if (r.Type === 'AWS::Serverless::HttpApi') {
          bump('AWS::ApiGatewayV2::Api');
          bump('AWS::ApiGatewayV2::Stage');
        } else {
          assert.ok(!r.Type.startsWith('AWS::Serverless::'), `no mapping for ${r.Type}`);
          bump(r.Type);
        }
      }
      const actual: Record<string, number> = {};
      for (const type of new Set(Object.values<Json>(cdk.Resources).map((r) => r.Type as string))) {
        // What SAM generates from a function's HttpApi events, compared route by route below.
        if (['AWS::ApiGatewayV2::Route', 'AWS::ApiGatewayV2::Integration', 'AWS::Lambda::Permission'].includes(type))
          continue;
        actual[type] = count(cdk.Resources, type);
      }
      assert.deepEqual(actual, expected);
    });

    for (const name of samFunctions) {
      const samFn = sam.Resources[name].Properties;

      test(`${name}: the same settings and environment`, () => {
        const fn = byName(name).Properties;
        const env = samResolve({ ...globals.Environment.Variables, ...(samFn.Environment?.Variables ?? {}) });
        assert.deepEqual(scalars(resolve(fn.Environment.Variables)), scalars(env));
        assert.equal(fn.Runtime, globals.Runtime);
        assert.deepEqual(fn.Architectures, globals.Architectures);
        assert.equal(fn.Handler, globals.Handler);
        assert.equal(String(fn.Timeout), String(samResolve(samFn.Timeout ?? globals.Timeout)));
        assert.equal(String(fn.MemorySize), String(samFn.MemorySize ?? globals.MemorySize));
        assert.deepEqual(fn.TracingConfig, { Mode: samFn.Tracing ?? globals.Tracing });
        assert.deepEqual(resolve(fn.LoggingConfig), samResolve(samFn.LoggingConfig));
        assert.equal(fn.Description, samFn.Description);
        const reserved = samResolve({ r: samFn.ReservedConcurrentExecutions }).r;
        assert.equal(
          fn.ReservedConcurrentExecutions === undefined ? undefined : String(fn.ReservedConcurrentExecutions),
          reserved === undefined ? undefined : String(reserved),
        );
      });

      test(`${name}: the same IAM actions on the same resources, the same managed policies`, () => {
        let samStatements: Json[] = [];
        let samManaged = SAM_ROLE_POLICIES;
        if (samFn.Role) {
          const role = sam.Resources[samFn.Role['Fn::GetAtt'][0]].Properties;
          samStatements = role.Policies.flatMap((p: Json) => p.PolicyDocument.Statement);
          samManaged = role.ManagedPolicyArns.map((a: Json) => basename(samResolve(a)));
        }
        for (const policy of samFn.Policies ?? []) samStatements.push(...policy.Statement);

        const roleRef = byName(name).Properties.Role['Fn::GetAtt'][0];
        const role = cdk.Resources[roleRef].Properties;
        const cdkStatements = (role.Policies ?? []).flatMap((p: Json) => p.PolicyDocument.Statement);
        for (const r of Object.values<Json>(cdk.Resources)) {
          if (r.Type === 'AWS::IAM::Policy' && r.Properties.Roles.some((x: Json) => x.Ref === roleRef)) {
            cdkStatements.push(...r.Properties.PolicyDocument.Statement);
          }
        }
        assert.deepEqual(grants(resolve(cdkStatements)), grants(samResolve(samStatements)));
        const cdkManaged = role.ManagedPolicyArns.map((a: Json) => basename(resolve(a)));
        assert.deepEqual([...cdkManaged].sort(), [...samManaged].sort());
      });
    }

    test('the same routes to the same functions', () => {
      const expected: string[] = [];
      for (const name of samFunctions) {
        for (const ev of Object.values<Json>(sam.Resources[name].Properties.Events ?? {})) {
          if (ev.Type !== 'HttpApi') continue;
          expected.push(`${ev.Properties.Method.toUpperCase()} ${ev.Properties.Path} -> ${name}`);
        }
      }
      const actual: string[] = [];
      for (const r of Object.values<Json>(cdk.Resources)) {
        if (r.Type !== 'AWS::ApiGatewayV2::Route') continue;
        const integration = cdk.Resources[r.Properties.Target['Fn::Join'][1][1].Ref].Properties;
        assert.equal(integration.PayloadFormatVersion, '2.0');
        const target = resolve(integration.IntegrationUri) as string;
        actual.push(`${r.Properties.RouteKey} -> ${target.replace(/^<(\w+)\.Arn>$/, '$1')}`);
      }
      assert.deepEqual(actual.sort(), expected.sort());
      const stage = Object.values<Json>(cdk.Resources).find((r) => r.Type === 'AWS::ApiGatewayV2::Stage');
      assert.equal(stage.Properties.StageName, sam.Resources.HttpApi.Properties.StageName ?? '$default');
      const samRoutes = samResolve({ r: sam.Resources.HttpApi.Properties.DefaultRouteSettings }).r;
      const cdkRoutes = stage.Properties.DefaultRouteSettings;
      assert.deepEqual(
        cdkRoutes === undefined ? undefined : scalars(cdkRoutes),
        samRoutes === undefined ? undefined : scalars(samRoutes),
      );
    });

    test('the same event sources on the events and ordered queues', () => {
      const samEvents = Object.values<Json>(sam.Resources.DeliverFunction.Properties.Events).filter(
        (e) => e.Type === 'SQS',
      );
      const mappings = Object.values<Json>(cdk.Resources).filter((r) => r.Type === 'AWS::Lambda::EventSourceMapping');
      assert.equal(mappings.length, samEvents.length);
      assert.equal(samEvents.length, 2);
      const comparable = (m: Json) => ({
        ...m,
        BatchSize: scalar(m.BatchSize),
        MaximumBatchingWindowInSeconds: scalar(m.MaximumBatchingWindowInSeconds),
        ScalingConfig: scalars(m.ScalingConfig),
      });
      for (const samEvent of samEvents) {
        const { Queue, ...samRest } = samResolve(samEvent.Properties);
        const mapping = mappings.find((m) => resolve(m.Properties).EventSourceArn === Queue);
        assert.ok(mapping, `no mapping on ${Queue}`);
        const { FunctionName, EventSourceArn: _, ...rest } = resolve(mapping.Properties);
        assert.equal(FunctionName, '<DeliverFunction>');
        assert.deepEqual(comparable(rest), comparable(samRest));
      }
    });

    const plain = (type: string) => Object.keys(sam.Resources).filter((k) => sam.Resources[k].Type === type);
    const numbers = (o: Json): Json =>
      Array.isArray(o)
        ? o.map(numbers)
        : typeof o === 'object' && o !== null
          ? Object.fromEntries(Object.entries(o).map(([k, v]) => [k, numbers(v)]))
          : typeof o === 'string' && /^\d+$/.test(o)
            ? Number(o)
            : o;

    for (const type of ['AWS::SQS::Queue', 'AWS::DynamoDB::Table', 'AWS::Logs::LogGroup']) {
      for (const name of plain(type)) {
        test(`${name}: the same ${type} settings and policies`, () => {
          const s = samResolve(sam.Resources[name]);
          const c = resolve(byName(name));
          assert.equal(c.Type, type);
          assert.deepEqual(numbers(c.Properties), numbers(s.Properties));
          assert.equal(c.DeletionPolicy, s.DeletionPolicy ?? 'Delete');
          assert.equal(c.UpdateReplacePolicy, s.UpdateReplacePolicy ?? 'Delete');
        });
      }
    }

    for (const name of plain('AWS::CloudWatch::Alarm')) {
      test(`${name}: the same metric, threshold and actions`, () => {
        const s = samResolve(sam.Resources[name].Properties);
        const c = resolve(byName(name).Properties);
        const queries = (metrics: Json[] | undefined) =>
          (metrics ?? [])
            .map((q: Json) => {
              const { Id, ...rest } = q;
              if (rest.MetricStat) {
                rest.MetricStat.Metric.Dimensions = [...(rest.MetricStat.Metric.Dimensions ?? [])].sort((a, b) =>
                  a.Name.localeCompare(b.Name),
                );
              }
              // The returned expression's id is the construct's own; the others are named in it.
              return q.ReturnData === false ? { Id, ...rest } : { ...rest, ReturnData: true };
            })
            .sort((a: Json, b: Json) => String(a.Id ?? '').localeCompare(String(b.Id ?? '')));
        const shape = (a: Json) =>
          numbers({
            Namespace: a.Namespace,
            MetricName: a.MetricName,
            Dimensions: a.Dimensions,
            Statistic: a.Statistic,
            Period: a.Period,
            Metrics: queries(a.Metrics),
            EvaluationPeriods: a.EvaluationPeriods,
            DatapointsToAlarm: a.DatapointsToAlarm,
            Threshold: a.Threshold,
            ComparisonOperator: a.ComparisonOperator,
            TreatMissingData: a.TreatMissingData,
            AlarmActions: a.AlarmActions ?? [],
            OKActions: a.OKActions ?? [],
          });
        assert.deepEqual(shape(c), shape(s));
      });
    }

    test('the same dashboard', () => {
      const [name] = plain('AWS::CloudWatch::Dashboard');
      const s = samResolve(sam.Resources[name].Properties);
      const c = resolve(byName(name).Properties);
      assert.equal(c.DashboardName, s.DashboardName);
      assert.deepEqual(JSON.parse(c.DashboardBody), JSON.parse(s.DashboardBody));
    });
  });
}
