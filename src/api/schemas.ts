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

export const CreateDcBody = Type.Object(
  {
    name: DcNameSchema,
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
