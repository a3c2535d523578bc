// Assertion tests of the Hookline construct: what it creates, how its props reach the
// resources, which props it refuses, and where the functions' code comes from.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { App, Duration, SecretValue, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import { RustFunction } from 'cargo-lambda-cdk';
import { disableAfterSetting, Hookline, HooklineCode, HooklineProps, humantime, OUTCOMES } from '../lib';
import { Json, resolveCdk, resourceNames } from './cfn';

const KEY = SecretValue.unsafePlainText('hkop_' + 'k'.repeat(40));
const BINARIES = ['hookline-api', 'hookline-ingest', 'hookline-deliver'];

const made: string[] = [];
after(() => made.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })));

/** A folder laid out as `cargo lambda build` leaves target/lambda, with stand-in bootstraps. */
function bootstrapDir(binaries = BINARIES): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hookline-cdk-'));
  made.push(dir);
  for (const b of binaries) {
    fs.mkdirSync(path.join(dir, b));
    fs.writeFileSync(path.join(dir, b, 'bootstrap'), '#!/bin/sh\n', { mode: 0o755 });
  }
  return dir;
}

function build(props: Partial<HooklineProps> = {}, withStack?: (stack: Stack) => Partial<HooklineProps>) {
  const stack = new Stack(new App(), 'Test');
  const hookline = new Hookline(stack, 'Hookline', {
    operatorKey: KEY,
    code: HooklineCode.fromBootstrapDir(bootstrapDir()),
    ...props,
    ...(withStack ? withStack(stack) : {}),
  });
  return { stack, hookline, template: Template.fromStack(stack) };
}

describe('Hookline construct', () => {
  const { stack, hookline, template } = build();

  test('three functions, arm64 on provided.al2023, running bootstrap, traced', () => {
    template.resourceCountIs('AWS::Lambda::Function', 3);
    template.allResourcesProperties('AWS::Lambda::Function', {
      Runtime: 'provided.al2023',
      Architectures: ['arm64'],
      Handler: 'bootstrap',
      TracingConfig: { Mode: 'Active' },
    });
    const fn = (f: lambda.Function) =>
      template.toJSON().Resources[stack.resolve((f.node.defaultChild as lambda.CfnFunction).logicalId)].Properties;
    assert.equal(fn(hookline.apiFunction).Timeout, 29);
    assert.equal(fn(hookline.ingestFunction).Timeout, 10);
    assert.equal(fn(hookline.deliverFunction).Timeout, 60);
    assert.equal(fn(hookline.deliverFunction).MemorySize, 256);
  });

  test('each function logs to its own group, kept a month', () => {
    template.resourceCountIs('AWS::Logs::LogGroup', 3);
    template.allResourcesProperties('AWS::Logs::LogGroup', { RetentionInDays: 30 });
    const groups = new Set<string>();
    for (const f of [hookline.apiFunction, hookline.ingestFunction, hookline.deliverFunction]) {
      const props = (f.node.defaultChild as lambda.CfnFunction).loggingConfig as Json;
      groups.add(stack.resolve(props.logGroup).Ref);
    }
    assert.equal(groups.size, 3);
    for (const g of Object.values(hookline.logGroups)) {
      assert.ok(groups.has(stack.resolve((g.node.defaultChild as Json).logicalId)));
    }
  });

  test('the events queue redrives to the dead-letter queue after 5 receives, visibility 6x the deliver timeout', () => {
    template.hasResourceProperties('AWS::SQS::Queue', {
      VisibilityTimeout: 360,
      RedrivePolicy: { maxReceiveCount: 5, deadLetterTargetArn: Match.anyValue() },
      SqsManagedSseEnabled: true,
    });
  });

  test('the table: on demand, TTL on expires_at, point-in-time recovery, retained', () => {
    template.hasResource('AWS::DynamoDB::Table', {
      DeletionPolicy: 'Retain',
      Properties: Match.objectLike({
        BillingMode: 'PAY_PER_REQUEST',
        TimeToLiveSpecification: { AttributeName: 'expires_at', Enabled: true },
        PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      }),
    });
  });

  test('the deliver function consumes the events queue with partial batch failures', () => {
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      BatchSize: 10,
      MaximumBatchingWindowInSeconds: 0,
      FunctionResponseTypes: ['ReportBatchItemFailures'],
      ScalingConfig: { MaximumConcurrency: 10 },
    });
  });

  test('no statement grants a table or queue action on *, and nothing scans', () => {
    for (const role of Object.values<Json>(template.findResources('AWS::IAM::Role'))) {
      for (const policy of role.Properties.Policies ?? []) {
        for (const s of policy.PolicyDocument.Statement) {
          const actions = [s.Action].flat().map((a: string) => a.toLowerCase());
          assert.ok(!actions.includes('dynamodb:scan'));
          assert.ok(!actions.some((a: string) => a.includes('*')), `${actions}`);
          assert.ok(![s.Resource].flat().includes('*'), `${actions} on *`);
        }
      }
    }
    template.resourceCountIs('AWS::IAM::Policy', 0);
  });

  test('eleven alarms, none with an action when no topic is given', () => {
    template.resourceCountIs('AWS::CloudWatch::Alarm', 11);
    for (const a of Object.values<Json>(template.findResources('AWS::CloudWatch::Alarm'))) {
      assert.equal(a.Properties.AlarmActions, undefined);
      assert.equal(a.Properties.TreatMissingData, 'notBreaching');
    }
  });

  test('the dashboard is JSON naming every alarm and every outcome', () => {
    const names = resourceNames(hookline);
    const [dashboard] = Object.values<Json>(template.findResources('AWS::CloudWatch::Dashboard'));
    const body = JSON.parse(resolveCdk(names)(dashboard.Properties.DashboardBody));
    const alarms = body.widgets.find((w: Json) => w.type === 'alarm').properties.alarms;
    assert.deepEqual(
      [...alarms].sort(),
      Object.keys(hookline.alarms)
        .map((a) => `<${a}.Arn>`)
        .sort(),
    );
    const outcomes = body.widgets
      .flatMap((w: Json) => w.properties.metrics ?? [])
      .filter((m: Json) => m[1] === 'delivery_attempts')
      .map((m: Json) => m[3]);
    assert.deepEqual([...new Set(outcomes)].sort(), [...OUTCOMES].sort());
  });
});

describe('props', () => {
  test('reach the functions, the queue and the event source', () => {
    const { template } = build({
      retrySchedule: [Duration.seconds(0), Duration.seconds(90), Duration.minutes(2), Duration.hours(1)],
      retentionDays: 400,
      allowHttp: true,
      deliverBatchSize: 3,
      deliverMaxConcurrency: 20,
      deliverRequestLimit: 32,
      deliverTimeout: Duration.minutes(5),
      metricsNamespace: 'Acme',
    });
    template.hasResourceProperties('AWS::Lambda::Function', {
      Timeout: 300,
      Environment: {
        Variables: Match.objectLike({
          HOOKLINE_RETRY_SCHEDULE: '0s,90s,2m,1h',
          HOOKLINE_RETENTION_DAYS: '400',
          HOOKLINE_ALLOW_HTTP: 'true',
          HOOKLINE_CONCURRENCY: '32',
          HOOKLINE_METRICS_NAMESPACE: 'Acme',
        }),
      },
    });
    template.hasResourceProperties('AWS::SQS::Queue', { VisibilityTimeout: 1800 });
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      BatchSize: 3,
      ScalingConfig: { MaximumConcurrency: 20 },
    });
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Metrics: Match.arrayWith([
        Match.objectLike({ MetricStat: Match.objectLike({ Metric: Match.objectLike({ Namespace: 'Acme' }) }) }),
      ]),
    });
  });

  test('reserved concurrency, batching window and stage throttling: none by default, set when given', () => {
    const none = build().template;
    for (const f of Object.values<Json>(none.findResources('AWS::Lambda::Function'))) {
      assert.equal(f.Properties.ReservedConcurrentExecutions, undefined);
    }
    none.hasResourceProperties('AWS::Lambda::EventSourceMapping', { MaximumBatchingWindowInSeconds: 0 });
    none.hasResourceProperties('AWS::ApiGatewayV2::Stage', { DefaultRouteSettings: Match.absent() });

    const { stack, hookline, template } = build({
      apiReservedConcurrency: 5,
      ingestReservedConcurrency: 0,
      deliverReservedConcurrency: 40,
      deliverMaxConcurrency: 40,
      deliverBatchingWindow: Duration.seconds(3),
      apiThrottle: { rateLimit: 500 },
    });
    const reservedOf = (f: lambda.Function) =>
      template.toJSON().Resources[stack.resolve((f.node.defaultChild as lambda.CfnFunction).logicalId)].Properties
        .ReservedConcurrentExecutions;
    assert.equal(reservedOf(hookline.apiFunction), 5);
    assert.equal(reservedOf(hookline.ingestFunction), undefined, '0 leaves the function unreserved');
    assert.equal(reservedOf(hookline.deliverFunction), 40);
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      MaximumBatchingWindowInSeconds: 3,
      ScalingConfig: { MaximumConcurrency: 40 },
    });
    template.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      DefaultRouteSettings: { ThrottlingRateLimit: 500, ThrottlingBurstLimit: 5000 },
    });
    build({ apiThrottle: { rateLimit: 0, burstLimit: 10 } }).template.hasResourceProperties(
      'AWS::ApiGatewayV2::Stage',
      { DefaultRouteSettings: Match.absent() },
    );
  });

  test('an alarm topic is notified by every alarm, on firing and on clearing', () => {
    const arn = 'arn:aws:sns:us-east-1:111111111111:ops';
    const { template } = build({}, (stack) => ({ alarmTopic: sns.Topic.fromTopicArn(stack, 'Ops', arn) }));
    const alarms = Object.values<Json>(template.findResources('AWS::CloudWatch::Alarm'));
    assert.equal(alarms.length, 11);
    for (const a of alarms) {
      assert.deepEqual(a.Properties.AlarmActions, [arn]);
      assert.deepEqual(a.Properties.OKActions, [arn]);
    }
  });

  test('the operator key from Secrets Manager stays a dynamic reference', () => {
    const { template } = build({ operatorKey: SecretValue.secretsManager('hookline/operator-key') });
    const env = Object.values<Json>(template.findResources('AWS::Lambda::Function')).map(
      (f) => f.Properties.Environment.Variables.HOOKLINE_OPERATOR_KEY,
    );
    const keys = env.filter((v) => v !== undefined);
    assert.equal(keys.length, 1, 'only the api function has the key');
    assert.match(JSON.stringify(keys[0]), /\{\{resolve:secretsmanager:.*hookline\/operator-key/);
  });

  test('delays render in their largest whole unit', () => {
    assert.equal(humantime(Duration.seconds(0)), '0s');
    assert.equal(humantime(Duration.seconds(5)), '5s');
    assert.equal(humantime(Duration.seconds(300)), '5m');
    assert.equal(humantime(Duration.seconds(90)), '90s');
    assert.equal(humantime(Duration.hours(10)), '10h');
  });

  test('disableAfter renders as the functions read it, the template default when unset', () => {
    assert.equal(disableAfterSetting(undefined), '5d');
    assert.equal(disableAfterSetting('off'), 'off');
    assert.equal(disableAfterSetting(Duration.days(2)), '2d');
    assert.equal(disableAfterSetting(Duration.hours(36)), '36h');
    assert.equal(disableAfterSetting(Duration.minutes(90)), '90m');
    const env = (props: Partial<HooklineProps>) => build(props).template.findResources('AWS::Lambda::Function');
    for (const fn of Object.values<Json>(env({ disableAfter: Duration.hours(12), failingAfterAttempts: 5 }))) {
      assert.equal(fn.Properties.Environment.Variables.HOOKLINE_DISABLE_AFTER, '12h');
      assert.equal(fn.Properties.Environment.Variables.HOOKLINE_FAILING_AFTER, '5');
    }
  });

  const refused: [string, Partial<HooklineProps>, RegExp][] = [
    ['retention under 15 days', { retentionDays: 14 }, /retentionDays/],
    ['a batch of 11', { deliverBatchSize: 11 }, /deliverBatchSize/],
    ['one concurrent poller', { deliverMaxConcurrency: 1 }, /deliverMaxConcurrency/],
    ['no request in flight', { deliverRequestLimit: 0 }, /deliverRequestLimit/],
    ['a batching window over 300 s', { deliverBatchingWindow: Duration.seconds(301) }, /deliverBatchingWindow/],
    ['a negative reserved concurrency', { apiReservedConcurrency: -1 }, /apiReservedConcurrency/],
    [
      'deliver reserved below the event source maximum',
      { deliverReservedConcurrency: 9, deliverMaxConcurrency: 10 },
      /deliverReservedConcurrency \(9\) must be at least deliverMaxConcurrency \(10\)/,
    ],
    ['a negative stage rate', { apiThrottle: { rateLimit: -1 } }, /apiThrottle.rateLimit/],
    ['a stage burst of 0', { apiThrottle: { rateLimit: 10, burstLimit: 0 } }, /apiThrottle.burstLimit/],
    ['a deliver timeout over 900 s', { deliverTimeout: Duration.seconds(901) }, /deliverTimeout/],
    ['a queue age alarm below SQS delays', { queueAgeAlarmThreshold: Duration.minutes(15) }, /queueAgeAlarmThreshold/],
    ['a failure share over 100 %', { deliveryFailureAlarmPercent: 101 }, /deliveryFailureAlarmPercent/],
    ['a 5xx share of 0 %', { api5xxAlarmPercent: 0 }, /api5xxAlarmPercent/],
    ['a namespace with a quote', { metricsNamespace: 'a"b' }, /metricsNamespace/],
    ['an empty retry schedule', { retrySchedule: [] }, /retrySchedule/],
    ['disabling after no time at all', { disableAfter: Duration.seconds(0) }, /disableAfter/],
    ['a failing notice after 0 attempts', { failingAfterAttempts: 0 }, /failingAfterAttempts/],
    ['a failing notice after 10000 attempts', { failingAfterAttempts: 10000 }, /failingAfterAttempts/],
  ];
  for (const [what, props, message] of refused) {
    test(`refuses ${what}`, () => {
      assert.throws(() => build(props), message);
    });
  }
});

describe('code', () => {
  test("prebuilt bootstraps come from cargo-lambda's target/lambda layout", () => {
    const dir = bootstrapDir();
    const { hookline } = build({ code: HooklineCode.fromBootstrapDir(dir) });
    assert.ok(!(hookline.apiFunction instanceof RustFunction));
    assert.equal(hookline.apiFunction.architecture, lambda.Architecture.ARM_64);
  });

  test('a missing bootstrap is refused at synth, not found at deployment', () => {
    const dir = bootstrapDir(['hookline-api', 'hookline-ingest']);
    assert.throws(() => build({ code: HooklineCode.fromBootstrapDir(dir) }), /no bootstrap in .*hookline-deliver/);
  });

  test('by default cargo-lambda builds each function from its own package (not when bundling is skipped)', () => {
    const stack = new Stack(new App(), 'Build');
    stack.node.setContext('aws:cdk:bundling-stacks', []);
    const hookline = new Hookline(stack, 'Hookline', { operatorKey: KEY });
    for (const f of [hookline.apiFunction, hookline.ingestFunction, hookline.deliverFunction]) {
      assert.ok(f instanceof RustFunction);
      assert.equal(f.architecture, lambda.Architecture.ARM_64);
      assert.equal(f.runtime.name, 'provided.al2023');
    }
    Template.fromStack(stack).resourceCountIs('AWS::Lambda::Function', 3);
  });
});
