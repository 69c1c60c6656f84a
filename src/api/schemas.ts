/**
 * Request schemas of the REST API (typebox = JSON Schema). Fastify validates every body, query and path
 * parameter against them before a handler runs, and the OpenAPI document is generated from them.
 * Objects reject unknown fields (`additionalProperties: false`) so a typo is a 400, not silently ignored.
 */
import { Type } from 'typebox';
import { DC_NAME_MAX } from '../cluster/dc-config.js';
import { MAX_ENDPOINT, MAX_PAYLOAD_LIMIT } from '../kernel/types.js';

const strict = { additionalProperties: false } as const;

export const NodeIdSchema = Type.Integer({ minimum: 0, maximum: 65535, description: 'node id' });
export const EndpointSchema = Type.Integer({
  minimum: 0,
  maximum: MAX_ENDPOINT,
  description: 'endpoint number',
});
export const DcNameSchema = Type.String({
  minLength: 1,
  maxLength: DC_NAME_MAX,
  pattern: '^[A-Za-z][A-Za-z0-9_-]*$',
  description: "DC name: letters, digits, '_' and '-', starting with a letter",
});

/** `:dc` path parameter: a DC name or id. */
export const DcParams = Type.Object(
  { dc: Type.String({ minLength: 1, maxLength: 64, description: 'DC name or id' }) },
  strict,
);
export const DcEpParams = Type.Object(
  { dc: Type.String({ minLength: 1, maxLength: 64, description: 'DC name or id' }), ep: EndpointSchema },
  strict,
);
export const DcNodeParams = Type.Object(
  { dc: Type.String({ minLength: 1, maxLength: 64, description: 'DC name or id' }), node: NodeIdSchema },
  strict,
);
export const NodeParams = Type.Object({ node: NodeIdSchema }, strict);

/** One limit as the CLI takes it (`256M`, `0.5`, `50%`, `128`, `10M`; `max` removes it): docs/isolation.md. */
const LimitValue = Type.String({
  minLength: 1,
  maxLength: 32,
  pattern: '^[0-9A-Za-z.%]+$',
  description: "e.g. '256M', '0.5', '50%', '128'; 'max' removes the limit",
});

/** DC limits (`dvs dc create|set --memory --cpus --pids --io-bps --net-bps`). */
export const LimitsSchema = Type.Object(
  {
    memory: Type.Optional(LimitValue),
    cpus: Type.Optional(LimitValue),
    pids: Type.Optional(LimitValue),
    'io-bps': Type.Optional(LimitValue),
    'net-bps': Type.Optional(LimitValue),
  },
  strict,
);

export const CreateDcBody = Type.Object(
  {
    name: DcNameSchema,
    limits: Type.Optional(LimitsSchema),
    lan: Type.Optional(
      Type.String({
        minLength: 9,
        maxLength: 18,
        pattern: '^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$',
        description: "the DC LAN's IPv4 prefix, e.g. 172.31.5.0/24",
      }),
    ),
    nodes: Type.Optional(Type.Array(NodeIdSchema, { minItems: 1, maxItems: 1024, uniqueItems: true })),
    id: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
    maxPayload: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_PAYLOAD_LIMIT })),
    sysEndpoints: Type.Optional(Type.Integer({ minimum: 0, maximum: 1 << 20 })),
    postWindow: Type.Optional(Type.Integer({ minimum: 1, maximum: 1 << 20 })),
  },
  strict,
);

export const UpdateDcBody = Type.Object(
  { nodes: Type.Array(NodeIdSchema, { minItems: 1, maxItems: 1024, uniqueItems: true }) },
  strict,
);

export const AddNodeBody = Type.Object({ node: NodeIdSchema }, strict);

export const RunBody = Type.Object(
  {
    ep: EndpointSchema,
    cmd: Type.Array(Type.String({ minLength: 1, maxLength: 4096 }), { minItems: 1, maxItems: 256 }),
    node: Type.Optional(NodeIdSchema),
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    env: Type.Optional(Type.Record(Type.String({ maxLength: 256 }), Type.String({ maxLength: 8192 }))),
    cwd: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
  },
  strict,
);

export const KillBody = Type.Object(
  {
    signal: Type.Optional(
      Type.String({ pattern: '^(SIG[A-Z0-9]+|[0-9]{1,2})$', description: 'e.g. SIGTERM' }),
    ),
    graceMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 600_000 })),
  },
  strict,
);

export const MigrateBody = Type.Object({ to: NodeIdSchema }, strict);

/** `PUT /dcs/{dc}/limits`: the limits to change (absent keys unchanged). */
export const SetLimitsBody = LimitsSchema;

export const ExecBody = Type.Object(
  {
    cmd: Type.Array(Type.String({ minLength: 1, maxLength: 4096 }), { minItems: 1, maxItems: 256 }),
    node: Type.Optional(NodeIdSchema),
    env: Type.Optional(Type.Record(Type.String({ maxLength: 256 }), Type.String({ maxLength: 8192 }))),
    cwd: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
    input: Type.Optional(Type.String({ maxLength: 1 << 16 })),
    timeoutMs: Type.Optional(Type.Integer({ minimum: 1, maximum: 600_000 })),
  },
  strict,
);

/** `/dcs/{dc}/kv/{key}`: the key is the rest of the path (it may contain '/'). */
export const DcKeyParams = Type.Object(
  {
    dc: Type.String({ minLength: 1, maxLength: 64, description: 'DC name or id' }),
    '*': Type.String({ minLength: 1, maxLength: 1024, description: 'the key' }),
  },
  strict,
);

/** A kv value: UTF-8 text (`value`) or bytes (`base64`), exactly one. */
export const KvPutBody = Type.Object(
  {
    value: Type.Optional(Type.String({ maxLength: 1 << 20 })),
    base64: Type.Optional(Type.String({ maxLength: 1_400_000, pattern: '^[A-Za-z0-9+/]*={0,2}$' })),
  },
  strict,
);

export const KvListQuery = Type.Object(
  {
    prefix: Type.Optional(Type.String({ maxLength: 1024 })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
  },
  strict,
);

/** Snapshot names as the daemon accepts them (src/node/snapshots.ts). */
export const SnapshotNameSchema = Type.String({
  minLength: 1,
  maxLength: 64,
  pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$',
  description: 'snapshot name',
});

export const SnapshotParams = Type.Object({ name: SnapshotNameSchema }, strict);

export const SnapshotCreateBody = Type.Object(
  {
    name: Type.Optional(SnapshotNameSchema),
    timeoutMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 600_000 })),
  },
  strict,
);

export const SnapshotsQuery = Type.Object(
  { dc: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })) },
  strict,
);

export const RestoreBody = Type.Object({ snapshot: SnapshotNameSchema }, strict);

export const ForkBody = Type.Object({ as: DcNameSchema }, strict);

export const LogsQuery = Type.Object(
  {
    offset: Type.Optional(Type.Integer({ minimum: 0 })),
    max: Type.Optional(Type.Integer({ minimum: 1, maximum: 1 << 20 })),
  },
  strict,
);

export const ProcessesQuery = Type.Object(
  { dc: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })) },
  strict,
);

export const EventsQuery = Type.Object(
  {
    node: Type.Optional(NodeIdSchema),
    since: Type.Optional(Type.Integer({ minimum: 0, description: 'return events with a larger seq' })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
  },
  strict,
);

export const StreamQuery = Type.Object(
  {
    since: Type.Optional(
      Type.Integer({ minimum: 0, description: 'first replay logged events after this seq' }),
    ),
    overview: Type.Optional(
      Type.Integer({
        minimum: 500,
        maximum: 60_000,
        description: 'also send a cluster overview every this many ms',
      }),
    ),
  },
  strict,
);

/** The error body every failing request gets (see errors.ts). */
export const ErrorBodySchema = Type.Object({
  error: Type.Object({
    code: Type.String(),
    message: Type.String(),
    field: Type.Optional(Type.String()),
    reason: Type.Optional(Type.String()),
    details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  }),
});

export const BalanceBody = Type.Object(
  {
    apply: Type.Optional(Type.Boolean({ description: 'perform the moves (default: only plan them)' })),
    maxMoves: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
  },
  strict,
);

/**
 * The network join (join.ts). The POST body is checked by `parseJoinRequest` rather than by fastify, so
 * that every refusal is counted and logged alike; this schema documents the same rules (a unit test keeps
 * the two in step).
 */
export const JoinBody = Type.Object(
  {
    version: Type.Literal(1, { description: 'version of the join request' }),
    tokenId: Type.String({ pattern: '^[A-Za-z0-9_-]{8}$', description: "the join token's id (not secret)" }),
    nodeId: NodeIdSchema,
    csr: Type.String({ maxLength: 8192, description: 'PKCS#10 request, PEM, CN node-<nodeId>' }),
    proof: Type.String({
      pattern: '^[0-9a-f]{64}$',
      description: 'HMAC-SHA256 of the CSR and node id keyed by the token (docs/security.md)',
    }),
  },
  strict,
);
/** Answer of `GET /join/ca`. */
export const JoinCaAnswer = Type.Object({
  ca: Type.String({ description: 'the cluster CA certificate, PEM' }),
  fingerprint: Type.String({ description: "its SHA-256 fingerprint, AB:CD:.. (the token's pin)" }),
});
/** Answer of `POST /join`. */
export const JoinAnswer = Type.Object({
  cert: Type.String({ description: 'the node certificate, PEM' }),
  ca: Type.String({ description: 'the cluster CA certificate, PEM' }),
});
