// The CloudWatch dashboard's body, widget for widget the one of template.yaml (the parity
// test compares them): delivery rate and outcomes, latencies, queues, functions, the API.

export interface DashboardRefs {
  readonly namespace: string;
  readonly region: string;
  readonly stackName: string;
  readonly eventsQueue: string;
  readonly deadLetterQueue: string;
  readonly httpApi: string;
  readonly functions: { readonly api: string; readonly ingest: string; readonly deliver: string };
  readonly alarms: string[];
}

/** delivery_attempts' outcomes, as the metrics contract names them. */
export const OUTCOMES = ['2xx', '4xx', '5xx', 'timeout', 'connect', 'tls', 'url_policy', 'rate_limited'];

type Row = unknown[];

export function dashboardBody(r: DashboardRefs): { widgets: object[] } {
  const ns = r.namespace;
  const metric = (
    x: number,
    y: number,
    width: number,
    height: number,
    title: string,
    metrics: Row[],
    stat = 'Sum',
    extra = {},
  ) => ({
    type: 'metric',
    x,
    y,
    width,
    height,
    properties: { title, region: r.region, view: 'timeSeries', stat, period: 60, metrics, ...extra },
  });
  const ids: Record<string, string> = {
    '4xx': 'c4xx',
    '5xx': 'c5xx',
    timeout: 'timeout',
    connect: 'connect',
    tls: 'tls',
    url_policy: 'policy',
  };
  const fns: [string, string][] = [
    ['api', r.functions.api],
    ['ingest', r.functions.ingest],
    ['deliver', r.functions.deliver],
  ];
  const api = (name: string, label: string): Row => [
    'AWS/ApiGateway',
    name,
    'ApiId',
    r.httpApi,
    'Stage',
    '$default',
    { label },
  ];
  return {
    widgets: [
      {
        type: 'text',
        x: 0,
        y: 0,
        width: 24,
        height: 1,
        properties: { markdown: `## Hookline (${r.stackName}): deliveries, queues, API and functions` },
      },
      { type: 'alarm', x: 0, y: 1, width: 24, height: 3, properties: { title: 'Alarms', alarms: r.alarms } },
      metric(0, 4, 12, 6, 'Delivery rate (per minute)', [
        [ns, 'delivery_attempts', 'outcome', '2xx', { id: 'ok', label: 'delivered (2xx)' }],
        ...Object.entries(ids).map(([o, id]) => [ns, 'delivery_attempts', 'outcome', o, { id, visible: false }]),
        [{ id: 'failed', expression: 'SUM([c4xx, c5xx, timeout, connect, tls, policy])', label: 'failed attempts' }],
        [
          {
            id: 'rate',
            expression: '100 * FILL(failed, 0) / SUM([ok, failed])',
            label: 'failed (% of attempts)',
            yAxis: 'right',
          },
        ],
        [ns, 'events_accepted', 'source', 'http', { label: 'events accepted (http)' }],
        [ns, 'events_accepted', 'source', 'sqs', { label: 'events accepted (sqs)' }],
      ]),
      metric(
        12,
        4,
        12,
        6,
        'Delivery attempts by outcome (per minute)',
        OUTCOMES.map((o) => [ns, 'delivery_attempts', 'outcome', o, { label: o }]),
        'Sum',
        { stacked: true },
      ),
      metric(
        0,
        10,
        12,
        6,
        'Attempt duration (ms)',
        [
          ...['p50', 'p90', 'p99'].map((p) => [
            ns,
            'attempt_duration',
            'outcome',
            '2xx',
            { stat: p, label: `2xx ${p}` },
          ]),
          ...['4xx', '5xx', 'timeout'].map((o) => [
            ns,
            'attempt_duration',
            'outcome',
            o,
            { stat: 'p99', label: `${o} p99` },
          ]),
        ],
        'p99',
      ),
      metric(
        12,
        10,
        12,
        6,
        'Publish to delivery (ms)',
        ['p50', 'p90', 'p99'].map((p) => [ns, 'delivery_latency', { stat: p, label: p }]),
        'p99',
      ),
      metric(
        0,
        16,
        8,
        6,
        'Events queue: age of the oldest message (s)',
        [['AWS/SQS', 'ApproximateAgeOfOldestMessage', 'QueueName', r.eventsQueue, { label: 'oldest message age' }]],
        'Maximum',
      ),
      metric(
        8,
        16,
        8,
        6,
        'Events queue: messages',
        [
          ['AWS/SQS', 'ApproximateNumberOfMessagesVisible', 'QueueName', r.eventsQueue, { label: 'visible' }],
          ['AWS/SQS', 'ApproximateNumberOfMessagesNotVisible', 'QueueName', r.eventsQueue, { label: 'in flight' }],
          ['AWS/SQS', 'ApproximateNumberOfMessagesDelayed', 'QueueName', r.eventsQueue, { label: 'delayed (retries)' }],
        ],
        'Maximum',
      ),
      metric(
        16,
        16,
        8,
        6,
        'Dead-letter queue depth',
        [['AWS/SQS', 'ApproximateNumberOfMessagesVisible', 'QueueName', r.deadLetterQueue, { label: 'dead letters' }]],
        'Maximum',
      ),
      metric(
        0,
        22,
        8,
        6,
        'Function duration (ms)',
        fns.flatMap(([n, f]) =>
          ['p50', 'p99'].map((p) => ['AWS/Lambda', 'Duration', 'FunctionName', f, { stat: p, label: `${n} ${p}` }]),
        ),
        'p99',
      ),
      metric(
        8,
        22,
        8,
        6,
        'Function errors and throttles',
        fns.flatMap(([n, f]) =>
          ['Errors', 'Throttles'].map((m) => [
            'AWS/Lambda',
            m,
            'FunctionName',
            f,
            { label: `${n} ${m.toLowerCase()}` },
          ]),
        ),
      ),
      metric(16, 22, 8, 6, 'HTTP API requests', [api('Count', 'requests'), api('4xx', '4xx'), api('5xx', '5xx')]),
    ],
  };
}
