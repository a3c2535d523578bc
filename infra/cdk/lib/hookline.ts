// The Hookline construct: the stack of template.yaml (HTTP API, the api, ingest and deliver
// functions, the events queue and its dead-letter queue, the table, log groups, alarms and
// the dashboard) for a CDK app. test/parity.test.ts keeps the two definitions in step.
import { Aws, Duration, RemovalPolicy, SecretValue, Stack, Token } from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { HooklineCode } from './code';
import { dashboardBody } from './dashboard';

/** The template's parameters, typed; each default is the template's. */
export interface HooklineProps {
  /**
   * Operator key (hkop_...) of the api function's operator routes, at least 32 characters.
   * Pass `SecretValue.secretsManager(...)` to keep it out of the template, or
   * `SecretValue.cfnParameter(...)` for a NoEcho parameter, as the SAM template has.
   */
  readonly operatorKey: SecretValue;
  /**
   * Key sealing endpoints' receiver credentials (HOOKLINE_CREDENTIALS_KEY of the api and
   * deliver functions): 32 bytes in base64. @default none: endpoints cannot be given auth
   */
  readonly credentialsKey?: SecretValue;
  /** Delays before each delivery attempt; their number is the number of attempts. */
  readonly retrySchedule?: Duration[];
  /** Days messages and attempts are kept (DynamoDB TTL), 15 to 3650. @default 30 */
  readonly retentionDays?: number;
  /** Allow plain http:// endpoint URLs. @default false */
  readonly allowHttp?: boolean;
  /**
   * How long every attempt to an endpoint must have failed before delivery disables it
   * (HOOKLINE_DISABLE_AFTER), whole seconds; 'off' never does. @default 5 days
   */
  readonly disableAfter?: Duration | 'off';
  /**
   * Failed attempts in a row of one delivery after which hookline.message.attempt.failing is
   * published (HOOKLINE_FAILING_AFTER), 1 to 9999; 'off' never publishes it. @default 3
   */
  readonly failingAfterAttempts?: number | 'off';
  /** SQS messages handed to one deliver invocation, 1 to 10. @default 10 */
  readonly deliverBatchSize?: number;
  /** Concurrent deliver invocations polling the events queue, 2 to 1000. @default 10 */
  readonly deliverMaxConcurrency?: number;
  /**
   * How long the event source may wait to fill a batch before it invokes the deliver
   * function, whole seconds up to 300. @default no wait
   */
  readonly deliverBatchingWindow?: Duration;
  /** Concurrent executions reserved for the api function, also its ceiling; 0 is unreserved. @default unreserved */
  readonly apiReservedConcurrency?: number;
  /** Concurrent executions reserved for the ingest function, also its ceiling; 0 is unreserved. @default unreserved */
  readonly ingestReservedConcurrency?: number;
  /**
   * Concurrent executions reserved for the deliver function; 0 is unreserved. At least
   * `deliverMaxConcurrency`: the event source does not count it, and a throttled batch goes
   * back to the queue towards the dead-letter redrive. @default unreserved
   */
  readonly deliverReservedConcurrency?: number;
  /**
   * The HTTP API stage's default route throttling: requests per second on each route, and
   * the burst above it (default 5000). A rate of 0 sets none. @default the account's limit only
   */
  readonly apiThrottle?: { readonly rateLimit: number; readonly burstLimit?: number };
  /** Delivery requests in flight per deliver invocation (HOOKLINE_CONCURRENCY), 1 to 65536. @default 256 */
  readonly deliverRequestLimit?: number;
  /**
   * Timeout of the deliver function, whole seconds up to 900; the events queue's visibility
   * timeout is six times it. @default 60 seconds
   */
  readonly deliverTimeout?: Duration;
  /** SNS topic the alarms notify when they fire and when they clear. @default no notification */
  readonly alarmTopic?: sns.ITopic;
  /** CloudWatch namespace of the functions' embedded metrics. @default "Hookline" */
  readonly metricsNamespace?: string;
  /** Retention of the functions' log groups. @default one month */
  readonly logRetention?: logs.RetentionDays;
  /** Age of the oldest events-queue message that raises an alarm, at least 16 minutes. @default 30 minutes */
  readonly queueAgeAlarmThreshold?: Duration;
  /** Share of failed delivery attempts (per cent) that raises an alarm, 1 to 100. @default 25 */
  readonly deliveryFailureAlarmPercent?: number;
  /** Share of HTTP API answers with a 5xx (per cent) that raises an alarm, 1 to 100. @default 5 */
  readonly api5xxAlarmPercent?: number;
  /**
   * CSP frame-ancestors sources allowed to embed the tenant portal (/portal/) in a frame,
   * e.g. "https://dashboard.example.com". @default "'none'"
   */
  readonly portalFrameAncestors?: string;
  /** The tenant portal's name, shown in its title bar. @default "Webhooks" */
  readonly portalTitle?: string;
  /** An https image URL shown beside the portal's name. @default none */
  readonly portalLogoUrl?: string;
  /** The portal's accent colour, "#rrggbb". @default the portal's own */
  readonly portalAccent?: string;
  /** The functions' code. @default HooklineCode.cargoLambda() */
  readonly code?: HooklineCode;
}

export const DEFAULT_RETRY_SCHEDULE = [
  Duration.seconds(0),
  Duration.seconds(5),
  Duration.minutes(5),
  Duration.minutes(30),
  Duration.hours(2),
  Duration.hours(5),
  Duration.hours(10),
  Duration.hours(10),
];

/** A delay as humantime reads it, in its largest whole unit (5m, not 300s). */
export function humantime(d: Duration): string {
  const s = d.toSeconds();
  if (s > 0 && s % 3600 === 0) return `${s / 3600}h`;
  if (s > 0 && s % 60 === 0) return `${s / 60}m`;
  return `${s}s`;
}

/** HOOKLINE_DISABLE_AFTER for the `disableAfter` prop: the template's own default, 5d, when unset. */
export function disableAfterSetting(d: Duration | 'off' | undefined): string {
  if (d === undefined) return '5d';
  if (d === 'off') return 'off';
  const s = d.toSeconds();
  if (!Number.isInteger(s) || s < 1) {
    throw new Error(`disableAfter must be at least one whole second, or 'off', not ${d.toHumanString()}`);
  }
  return s % 86400 === 0 ? `${s / 86400}d` : humantime(d);
}

function inRange(name: string, value: number, min: number, max: number): number {
  if (!Token.isUnresolved(value) && (!Number.isInteger(value) || value < min || value > max)) {
    throw new Error(`${name} must be a whole number from ${min} to ${max}, not ${value}`);
  }
  return value;
}

// Every metric of the alarms and dashboard is summed or sampled over 5 minutes.
const PERIOD = Duration.minutes(5);

export class Hookline extends Construct {
  public readonly httpApi: apigw.HttpApi;
  public readonly apiFunction: lambda.Function;
  public readonly ingestFunction: lambda.Function;
  public readonly deliverFunction: lambda.Function;
  public readonly table: dynamodb.Table;
  public readonly eventsQueue: sqs.Queue;
  public readonly deadLetterQueue: sqs.Queue;
  /** Ordered delivery: a FIFO queue, a message group per sequence. */
  public readonly orderedQueue: sqs.Queue;
  public readonly orderedDeadLetterQueue: sqs.Queue;
  public readonly logGroups: Record<'api' | 'ingest' | 'deliver', logs.LogGroup>;
  public readonly alarms: Record<string, cloudwatch.Alarm>;
  public readonly dashboard: cloudwatch.CfnDashboard;

  constructor(scope: Construct, id: string, props: HooklineProps) {
    super(scope, id);
    const portalAccent = props.portalAccent ?? '';
    const credentialsKey = props.credentialsKey?.unsafeUnwrap() ?? '';
    if (!Token.isUnresolved(portalAccent) && !/^(#[0-9a-fA-F]{6})?$/.test(portalAccent)) {
      throw new Error(`portalAccent must be "#rrggbb" or empty, not ${portalAccent}`);
    }
    const retentionDays = inRange('retentionDays', props.retentionDays ?? 30, 15, 3650);
    const batchSize = inRange('deliverBatchSize', props.deliverBatchSize ?? 10, 1, 10);
    const maxConcurrency = inRange('deliverMaxConcurrency', props.deliverMaxConcurrency ?? 10, 2, 1000);
    const batchingWindow = inRange(
      'deliverBatchingWindow (s)',
      (props.deliverBatchingWindow ?? Duration.seconds(0)).toSeconds(),
      0,
      300,
    );
    // 0 is "not set", as in the template: a reserved concurrency of 0 would stop the function.
    const reserved = (name: string, value?: number) =>
      inRange(name, value ?? 0, 0, Number.MAX_SAFE_INTEGER) || undefined;
    const apiReserved = reserved('apiReservedConcurrency', props.apiReservedConcurrency);
    const ingestReserved = reserved('ingestReservedConcurrency', props.ingestReservedConcurrency);
    const deliverReserved = reserved('deliverReservedConcurrency', props.deliverReservedConcurrency);
    if (
      deliverReserved !== undefined &&
      !Token.isUnresolved(deliverReserved) &&
      !Token.isUnresolved(maxConcurrency) &&
      deliverReserved < maxConcurrency
    ) {
      throw new Error(
        `deliverReservedConcurrency (${deliverReserved}) must be at least deliverMaxConcurrency (${maxConcurrency})`,
      );
    }
    const throttleRate = props.apiThrottle?.rateLimit ?? 0;
    if (!Token.isUnresolved(throttleRate) && !(throttleRate >= 0)) {
      throw new Error(`apiThrottle.rateLimit must be 0 or more, not ${throttleRate}`);
    }
    const throttleBurst = inRange(
      'apiThrottle.burstLimit',
      props.apiThrottle?.burstLimit ?? 5000,
      1,
      Number.MAX_SAFE_INTEGER,
    );
    const requestLimit = inRange('deliverRequestLimit', props.deliverRequestLimit ?? 256, 1, 65536);
    const deliverTimeout = inRange(
      'deliverTimeout (s)',
      (props.deliverTimeout ?? Duration.seconds(60)).toSeconds(),
      1,
      900,
    );
    const failurePercent = inRange('deliveryFailureAlarmPercent', props.deliveryFailureAlarmPercent ?? 25, 1, 100);
    const api5xxPercent = inRange('api5xxAlarmPercent', props.api5xxAlarmPercent ?? 5, 1, 100);
    // A retry waits on the queue for up to SQS's longest delay, 15 minutes: the template's
    // QueueAgeAlarmSeconds bounds, a minute over that.
    const queueAge = inRange(
      'queueAgeAlarmThreshold (s)',
      (props.queueAgeAlarmThreshold ?? Duration.minutes(30)).toSeconds(),
      960,
      1209600,
    );
    const namespace = props.metricsNamespace ?? 'Hookline';
    // What CloudWatch allows, less what would need escaping in the dashboard's JSON.
    if (!/^[A-Za-z0-9][A-Za-z0-9 ._/#:-]{0,254}$/.test(namespace)) {
      throw new Error(`metricsNamespace ${JSON.stringify(namespace)}: letters, digits, spaces and . _ / # : - only`);
    }
    const schedule = props.retrySchedule ?? DEFAULT_RETRY_SCHEDULE;
    if (schedule.length === 0) {
      throw new Error('retrySchedule needs at least one delay');
    }
    const code = props.code ?? HooklineCode.cargoLambda();
    const disableAfter = disableAfterSetting(props.disableAfter);
    const failingAfter =
      props.failingAfterAttempts === 'off'
        ? 'off'
        : String(inRange('failingAfterAttempts', props.failingAfterAttempts ?? 3, 1, 9999));

    this.table = new dynamodb.Table(this, 'Table', {
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      partitionKey: { name: 'pk', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'sk', type: dynamodb.AttributeType.STRING },
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      encryption: dynamodb.TableEncryption.AWS_MANAGED,
      timeToLiveAttribute: 'expires_at',
      removalPolicy: RemovalPolicy.RETAIN,
    });
    // Sparse: an endpoint's failed deliveries, for replays.
    this.table.addGlobalSecondaryIndex({
      indexName: 'gsi2',
      partitionKey: { name: 'gsi2pk', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'gsi2sk', type: dynamodb.AttributeType.STRING },
      projectionType: dynamodb.ProjectionType.ALL,
    });

    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      retentionPeriod: Duration.days(14),
      maxMessageSizeBytes: 1048576,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.eventsQueue = new sqs.Queue(this, 'EventsQueue', {
      // Six times the deliver timeout, as AWS recommends for SQS event sources.
      visibilityTimeout: Duration.seconds(6 * deliverTimeout),
      retentionPeriod: Duration.days(14),
      maxMessageSizeBytes: 1048576,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: 5 },
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // A FIFO queue's dead-letter queue must be FIFO too.
    this.orderedDeadLetterQueue = new sqs.Queue(this, 'OrderedDeadLetterQueue', {
      fifo: true,
      retentionPeriod: Duration.days(14),
      maxMessageSizeBytes: 1048576,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // Deduplication ids are the tasks' own. A sequence held by a failing head is received
    // again on every retry: running out of retries is the deliver function's call.
    this.orderedQueue = new sqs.Queue(this, 'OrderedQueue', {
      fifo: true,
      contentBasedDeduplication: false,
      visibilityTimeout: Duration.seconds(6 * deliverTimeout),
      retentionPeriod: Duration.days(14),
      maxMessageSizeBytes: 1048576,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      deadLetterQueue: { queue: this.orderedDeadLetterQueue, maxReceiveCount: 100 },
      removalPolicy: RemovalPolicy.DESTROY,
    });

    const logGroup = (name: 'api' | 'ingest' | 'deliver', groupId: string) =>
      new logs.LogGroup(this, groupId, {
        logGroupName: `/hookline/${Aws.STACK_NAME}/${name}`,
        retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
        removalPolicy: RemovalPolicy.DESTROY,
      });
    this.logGroups = {
      api: logGroup('api', 'ApiLogGroup'),
      ingest: logGroup('ingest', 'IngestLogGroup'),
      deliver: logGroup('deliver', 'DeliverLogGroup'),
    };

    const shared: Record<string, string> = {
      TABLE_NAME: this.table.tableName,
      HOOKLINE_RETRY_SCHEDULE: schedule.map(humantime).join(','),
      HOOKLINE_RETENTION_DAYS: String(retentionDays),
      HOOKLINE_ALLOW_HTTP: props.allowHttp ? 'true' : 'false',
      HOOKLINE_DISABLE_AFTER: disableAfter,
      HOOKLINE_FAILING_AFTER: failingAfter,
      HOOKLINE_LOG: 'info',
      HOOKLINE_METRICS_NAMESPACE: namespace,
    };
    const tableResources = [this.table.tableArn, `${this.table.tableArn}/index/*`];
    const allow = (sid: string, actions: string[], resources: string[]) =>
      new iam.PolicyStatement({ sid, effect: iam.Effect.ALLOW, actions, resources });
    // Roles of their own, as the template's: the CloudWatch Logs and X-Ray managed policies
    // SAM attaches, then only the table and queue actions each function uses, inline.
    const role = (roleId: string, description: string, policyName: string, statements: iam.PolicyStatement[]) =>
      new iam.Role(this, roleId, {
        description,
        assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
        managedPolicies: [
          iam.ManagedPolicy.fromAwsManagedPolicyName('service-role/AWSLambdaBasicExecutionRole'),
          iam.ManagedPolicy.fromAwsManagedPolicyName('AWSXrayWriteOnlyAccess'),
        ],
        inlinePolicies: { [policyName]: new iam.PolicyDocument({ statements }) },
      });
    // Active tracing set on the function itself: the L2 `tracing` prop would add an inline
    // X-Ray statement that AWSXrayWriteOnlyAccess already grants.
    const traced = (fn: lambda.Function) => {
      (fn.node.defaultChild as lambda.CfnFunction).tracingConfig = { mode: 'Active' };
    };
    const common = { memorySize: 128 };

    const apiRole = role('ApiRole', 'Role of the Hookline api function', 'ApiQueueAndTable', [
      // Replays queue attempt tasks.
      allow('EnqueueReplays', ['sqs:SendMessage'], [this.eventsQueue.queueArn]),
      // GET /health asks the events queue for its attributes.
      allow('ProbeQueue', ['sqs:GetQueueAttributes'], [this.eventsQueue.queueArn]),
      // GET /v1/dead-letters receives under a short visibility timeout and gives the messages
      // back; a redrive deletes what it re-sent.
      allow(
        'ReadAndRedriveDeadLetters',
        ['sqs:ReceiveMessage', 'sqs:ChangeMessageVisibility', 'sqs:DeleteMessage'],
        [this.deadLetterQueue.queueArn],
      ),
      allow(
        'TableReadWrite',
        [
          'dynamodb:GetItem',
          'dynamodb:BatchGetItem',
          'dynamodb:PutItem',
          'dynamodb:UpdateItem',
          'dynamodb:DeleteItem',
          'dynamodb:Query',
          'dynamodb:BatchWriteItem',
          'dynamodb:ConditionCheckItem',
        ],
        tableResources,
      ),
    ]);
    this.apiFunction = code.createFunction(this, 'ApiFunction', {
      ...common,
      binary: 'hookline-api',
      description: 'Hookline tenant and operator API (/v1, /v3, /openapi.json) and portal (/portal)',
      timeout: Duration.seconds(29),
      reservedConcurrentExecutions: apiReserved,
      role: apiRole,
      logGroup: this.logGroups.api,
      environment: {
        ...shared,
        HOOKLINE_OPERATOR_KEY: props.operatorKey.unsafeUnwrap(),
        HOOKLINE_CREDENTIALS_KEY: credentialsKey,
        QUEUE_URL: this.eventsQueue.queueUrl,
        DLQ_URL: this.deadLetterQueue.queueUrl,
        ORDERED_QUEUE_URL: this.orderedQueue.queueUrl,
        HOOKLINE_PORTAL_FRAME_ANCESTORS: props.portalFrameAncestors ?? "'none'",
        HOOKLINE_PORTAL_TITLE: props.portalTitle ?? 'Webhooks',
        HOOKLINE_PORTAL_LOGO_URL: props.portalLogoUrl ?? '',
        HOOKLINE_PORTAL_ACCENT: portalAccent,
      },
    });

    const ingestRole = role('IngestRole', 'Role of the Hookline ingest function', 'IngestQueueAndTable', [
      allow('EnqueueEvents', ['sqs:SendMessage'], [this.eventsQueue.queueArn, this.orderedQueue.queueArn]),
      allow(
        'TableIngest',
        [
          'dynamodb:GetItem',
          'dynamodb:PutItem',
          'dynamodb:UpdateItem',
          'dynamodb:ConditionCheckItem',
          'dynamodb:Query',
        ],
        tableResources,
      ),
    ]);
    this.ingestFunction = code.createFunction(this, 'IngestFunction', {
      ...common,
      binary: 'hookline-ingest',
      description: 'Hookline ingestion (POST /v1/events) onto the events queue',
      timeout: Duration.seconds(10),
      reservedConcurrentExecutions: ingestReserved,
      role: ingestRole,
      logGroup: this.logGroups.ingest,
      environment: { ...shared, QUEUE_URL: this.eventsQueue.queueUrl, ORDERED_QUEUE_URL: this.orderedQueue.queueUrl },
    });

    const deliverRole = role('DeliverRole', 'Role of the Hookline deliver function', 'DeliverQueuesAndTable', [
      // Retries, held-back and delayed copies of tasks; dead letters.
      allow(
        'RequeueAndDeadLetter',
        ['sqs:SendMessage'],
        [this.eventsQueue.queueArn, this.deadLetterQueue.queueArn, this.orderedQueue.queueArn],
      ),
      // The event source's receives and deletes, and the function's own: early deletes, a
      // short visibility for a record that must wait, the redrive policy's receive count.
      // Not SqsEventSource: its grant adds sqs:GetQueueUrl, which nothing uses.
      allow(
        'ConsumeEvents',
        ['sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:GetQueueAttributes', 'sqs:ChangeMessageVisibility'],
        [this.eventsQueue.queueArn, this.orderedQueue.queueArn],
      ),
      allow(
        'TableDeliver',
        ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:Query', 'dynamodb:BatchWriteItem'],
        tableResources,
      ),
    ]);
    this.deliverFunction = code.createFunction(this, 'DeliverFunction', {
      ...common,
      binary: 'hookline-deliver',
      description: 'Hookline delivery worker on the events queue',
      timeout: Duration.seconds(deliverTimeout),
      memorySize: 256,
      reservedConcurrentExecutions: deliverReserved,
      role: deliverRole,
      logGroup: this.logGroups.deliver,
      environment: {
        ...shared,
        QUEUE_URL: this.eventsQueue.queueUrl,
        DLQ_URL: this.deadLetterQueue.queueUrl,
        ORDERED_QUEUE_URL: this.orderedQueue.queueUrl,
        HOOKLINE_CONCURRENCY: String(requestLimit),
        HOOKLINE_CREDENTIALS_KEY: credentialsKey,
      },
    });
    for (const fn of [this.apiFunction, this.ingestFunction, this.deliverFunction]) {
      traced(fn);
    }
    const source = new lambda.EventSourceMapping(this, 'DeliverQueueSource', {
      target: this.deliverFunction,
      eventSourceArn: this.eventsQueue.queueArn,
      batchSize,
      maxBatchingWindow: Duration.seconds(batchingWindow),
      reportBatchItemFailures: true,
      maxConcurrency,
    });
    // The mapping checks the role's SQS permissions when it is created.
    source.node.addDependency(deliverRole);
    // FIFO sources take no batching window; a failed record is handed back with the rest
    // of its group.
    const orderedSource = new lambda.EventSourceMapping(this, 'DeliverOrderedQueueSource', {
      target: this.deliverFunction,
      eventSourceArn: this.orderedQueue.queueArn,
      batchSize: 10,
      reportBatchItemFailures: true,
      maxConcurrency,
    });
    orderedSource.node.addDependency(deliverRole);

    this.httpApi = new apigw.HttpApi(this, 'HttpApi', {
      description: 'Hookline API (payload format 2.0)',
    });
    if (Token.isUnresolved(throttleRate) || throttleRate > 0) {
      // The L2 HttpApi passes no throttle to the default stage it creates.
      const stage = this.httpApi.defaultStage!.node.defaultChild as apigw.CfnStage;
      stage.defaultRouteSettings = { throttlingRateLimit: throttleRate, throttlingBurstLimit: throttleBurst };
    }
    const api = new HttpLambdaIntegration('Api', this.apiFunction, {
      payloadFormatVersion: apigw.PayloadFormatVersion.VERSION_2_0,
    });
    this.httpApi.addRoutes({ path: '/v1/{proxy+}', methods: [apigw.HttpMethod.ANY], integration: api });
    this.httpApi.addRoutes({ path: '/v3/{proxy+}', methods: [apigw.HttpMethod.ANY], integration: api });
    this.httpApi.addRoutes({ path: '/openapi.json', methods: [apigw.HttpMethod.GET], integration: api });
    this.httpApi.addRoutes({ path: '/health', methods: [apigw.HttpMethod.GET], integration: api });
    this.httpApi.addRoutes({ path: '/portal', methods: [apigw.HttpMethod.GET], integration: api });
    this.httpApi.addRoutes({ path: '/portal/{proxy+}', methods: [apigw.HttpMethod.ANY], integration: api });
    this.httpApi.addRoutes({
      path: '/v1/events',
      methods: [apigw.HttpMethod.POST],
      integration: new HttpLambdaIntegration('Ingest', this.ingestFunction, {
        payloadFormatVersion: apigw.PayloadFormatVersion.VERSION_2_0,
      }),
    });

    this.alarms = this.createAlarms(namespace, { queueAge, failurePercent, api5xxPercent }, props.alarmTopic);
    this.dashboard = new cloudwatch.CfnDashboard(this, 'Dashboard', {
      // Dashboard names are global to the account.
      dashboardName: `${Aws.STACK_NAME}-${Aws.REGION}`,
      dashboardBody: Stack.of(this).toJsonString(
        dashboardBody({
          namespace,
          region: Aws.REGION,
          stackName: Aws.STACK_NAME,
          eventsQueue: this.eventsQueue.queueName,
          deadLetterQueue: this.deadLetterQueue.queueName,
          httpApi: this.httpApi.apiId,
          functions: {
            api: this.apiFunction.functionName,
            ingest: this.ingestFunction.functionName,
            deliver: this.deliverFunction.functionName,
          },
          alarms: Object.values(this.alarms).map((a) => a.alarmArn),
        }),
      ),
    });
  }

  private createAlarms(
    namespace: string,
    thresholds: { queueAge: number; failurePercent: number; api5xxPercent: number },
    topic?: sns.ITopic,
  ): Record<string, cloudwatch.Alarm> {
    const alarms: Record<string, cloudwatch.Alarm> = {};
    const add = (alarmId: string, props: cloudwatch.AlarmProps) => {
      const alarm = new cloudwatch.Alarm(this, alarmId, {
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        // No traffic is not an incident.
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        ...props,
      });
      if (topic) {
        alarm.addAlarmAction(new cwActions.SnsAction(topic));
        alarm.addOkAction(new cwActions.SnsAction(topic));
      }
      alarms[alarmId] = alarm;
    };
    const metric = (ns: string, metricName: string, dimensionsMap: Record<string, string>, statistic: string) =>
      new cloudwatch.Metric({ namespace: ns, metricName, dimensionsMap, statistic, period: PERIOD });

    add('DeadLetterQueueDepthAlarm', {
      alarmDescription: 'Messages are waiting in the Hookline dead-letter queue.',
      metric: metric(
        'AWS/SQS',
        'ApproximateNumberOfMessagesVisible',
        { QueueName: this.deadLetterQueue.queueName },
        'Maximum',
      ),
      threshold: 0,
      evaluationPeriods: 1,
    });
    add('OrderedDeadLetterQueueDepthAlarm', {
      alarmDescription: 'Messages are waiting in the Hookline ordered (FIFO) dead-letter queue.',
      metric: metric(
        'AWS/SQS',
        'ApproximateNumberOfMessagesVisible',
        { QueueName: this.orderedDeadLetterQueue.queueName },
        'Maximum',
      ),
      threshold: 0,
      evaluationPeriods: 1,
    });
    add('EventsQueueAgeAlarm', {
      alarmDescription: `The oldest message on the Hookline events queue has waited longer than ${thresholds.queueAge} s: deliveries are falling behind.`,
      metric: metric('AWS/SQS', 'ApproximateAgeOfOldestMessage', { QueueName: this.eventsQueue.queueName }, 'Maximum'),
      threshold: thresholds.queueAge,
      evaluationPeriods: 1,
    });

    // API Gateway counts 5xx answers whichever function (or API Gateway itself) gave them.
    const stage = { ApiId: this.httpApi.apiId, Stage: '$default' };
    add('Api5xxRateAlarm', {
      alarmDescription: `More than ${thresholds.api5xxPercent} % of the Hookline HTTP API's requests were answered with a 5xx over 5 minutes (with at least 20 requests).`,
      metric: new cloudwatch.MathExpression({
        // Below 20 requests a few errors say little: no alarm.
        expression: 'IF(requests >= 20, 100 * FILL(errors, 0) / requests, 0)',
        label: '5xx answers (% of requests)',
        period: PERIOD,
        usingMetrics: {
          errors: metric('AWS/ApiGateway', '5xx', stage, 'Sum'),
          requests: metric('AWS/ApiGateway', 'Count', stage, 'Sum'),
        },
      }),
      threshold: thresholds.api5xxPercent,
      evaluationPeriods: 1,
    });

    // delivery_attempts by outcome; rate_limited made no request and counts neither way.
    const attempts = (outcome: string) => metric(namespace, 'delivery_attempts', { outcome }, 'Sum');
    const failures = {
      c4xx: attempts('4xx'),
      c5xx: attempts('5xx'),
      timeout: attempts('timeout'),
      connect: attempts('connect'),
      tls: attempts('tls'),
      policy: attempts('url_policy'),
    };
    add('DeliveryFailureRateAlarm', {
      alarmDescription: `More than ${thresholds.failurePercent} % of Hookline's delivery attempts failed (4xx, 5xx, timeout, connect, tls, url_policy) in two 5-minute periods in a row (with at least 20 attempts in each).`,
      metric: new cloudwatch.MathExpression({
        expression: 'IF(attempts >= 20, 100 * FILL(failed, 0) / attempts, 0)',
        label: 'Failed delivery attempts (% of attempts)',
        period: PERIOD,
        usingMetrics: {
          failed: new cloudwatch.MathExpression({
            expression: 'SUM([c4xx, c5xx, timeout, connect, tls, policy])',
            period: PERIOD,
            usingMetrics: failures,
          }),
          attempts: new cloudwatch.MathExpression({
            expression: 'SUM([ok, c4xx, c5xx, timeout, connect, tls, policy])',
            period: PERIOD,
            usingMetrics: { ok: attempts('2xx'), ...failures },
          }),
        },
      }),
      threshold: thresholds.failurePercent,
      evaluationPeriods: 2,
      datapointsToAlarm: 2,
    });

    const functions: [string, string, lambda.Function][] = [
      ['ApiFunction', 'api', this.apiFunction],
      ['IngestFunction', 'ingest', this.ingestFunction],
      ['DeliverFunction', 'deliver', this.deliverFunction],
    ];
    for (const [fnId, name, fn] of functions) {
      const dims = { FunctionName: fn.functionName };
      add(`${fnId}ErrorsAlarm`, {
        alarmDescription: `The Hookline ${name} function reported errors.`,
        metric: metric('AWS/Lambda', 'Errors', dims, 'Sum'),
        threshold: 0,
        evaluationPeriods: 1,
      });
      add(`${fnId}ThrottlesAlarm`, {
        alarmDescription: `The Hookline ${name} function was throttled.`,
        metric: metric('AWS/Lambda', 'Throttles', dims, 'Sum'),
        threshold: 0,
        evaluationPeriods: 1,
      });
    }
    return alarms;
  }
}
