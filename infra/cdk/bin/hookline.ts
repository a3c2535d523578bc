#!/usr/bin/env node
// The Hookline stack as a CDK app: the Hookline construct in one stack, the operator key a
// NoEcho parameter as in template.yaml, the settings from context (-c key=value).
import { App, CfnOutput, CfnParameter, Duration, SecretValue, Stack } from 'aws-cdk-lib';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sns from 'aws-cdk-lib/aws-sns';
import { Hookline, HooklineCode } from '../lib';

const app = new App();
const context = (key: string): string | undefined => app.node.tryGetContext(key);
const number = (key: string): number | undefined => {
  const value = context(key);
  return value === undefined ? undefined : Number(value);
};

const stack = new Stack(app, context('stackName') ?? 'Hookline', {
  description: 'Hookline webhook delivery (CDK): an HTTP API, the api, ingest and deliver functions, SQS, DynamoDB',
});
// Synthesizes the template without building the functions (the CDK's own bundling switch,
// which `cdk synth` otherwise sets to every stack).
if (context('skipBuild') === 'true') {
  stack.node.setContext('aws:cdk:bundling-stacks', []);
}

const operatorKey = new CfnParameter(stack, 'OperatorKey', {
  type: 'String',
  noEcho: true,
  minLength: 32,
  description:
    "Operator key (hkop_...) for the api function's operator routes, at least 32 characters; " +
    'a Secrets Manager dynamic reference keeps it out of parameter files.',
});

const credentialsKey = new CfnParameter(stack, 'CredentialsKey', {
  type: 'String',
  noEcho: true,
  default: '',
  description:
    "Key sealing endpoints' receiver credentials: 32 bytes in base64, or a Secrets Manager " +
    'dynamic reference; empty: endpoints cannot be given auth.',
});

const bootstrapDir = context('bootstrapDir');
const alarmTopicArn = context('alarmTopicArn');
const retention = number('logRetentionDays');
const batchingWindow = number('deliverBatchingWindowSeconds');
const throttleRate = number('apiThrottleRateLimit');
const hookline = new Hookline(stack, 'Hookline', {
  operatorKey: SecretValue.cfnParameter(operatorKey),
  credentialsKey: SecretValue.cfnParameter(credentialsKey),
  code: bootstrapDir ? HooklineCode.fromBootstrapDir(bootstrapDir) : HooklineCode.cargoLambda(),
  alarmTopic: alarmTopicArn ? sns.Topic.fromTopicArn(stack, 'AlarmTopic', alarmTopicArn) : undefined,
  retentionDays: number('retentionDays'),
  allowHttp: context('allowHttp') === 'true',
  metricsNamespace: context('metricsNamespace'),
  logRetention: retention === undefined ? undefined : (retention as logs.RetentionDays),
  portalFrameAncestors: context('portalFrameAncestors'),
  portalTitle: context('portalTitle'),
  portalLogoUrl: context('portalLogoUrl'),
  portalAccent: context('portalAccent'),
  // Scale settings (docs/scale.md); reserved concurrency 0 or absent leaves a function unreserved.
  deliverBatchSize: number('deliverBatchSize'),
  deliverMaxConcurrency: number('deliverMaxConcurrency'),
  deliverBatchingWindow: batchingWindow === undefined ? undefined : Duration.seconds(batchingWindow),
  apiReservedConcurrency: number('apiReservedConcurrency'),
  ingestReservedConcurrency: number('ingestReservedConcurrency'),
  deliverReservedConcurrency: number('deliverReservedConcurrency'),
  apiThrottle:
    throttleRate === undefined ? undefined : { rateLimit: throttleRate, burstLimit: number('apiThrottleBurstLimit') },
});

new CfnOutput(stack, 'ApiUrl', { description: 'Base URL of the HTTP API', value: hookline.httpApi.url! });
new CfnOutput(stack, 'EventsQueueUrl', {
  description: 'URL of the events queue',
  value: hookline.eventsQueue.queueUrl,
});
new CfnOutput(stack, 'OrderedQueueUrl', {
  description: 'The FIFO queue of ordered delivery',
  value: hookline.orderedQueue.queueUrl,
});
new CfnOutput(stack, 'DeadLetterQueueUrl', {
  description: 'URL of the dead-letter queue',
  value: hookline.deadLetterQueue.queueUrl,
});
new CfnOutput(stack, 'TableName', { description: 'Name of the DynamoDB table', value: hookline.table.tableName });
