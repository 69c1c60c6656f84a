/**
 * The OpenAPI 3.1 document of `/api/v1`, generated from the same typebox schemas fastify validates with
 * (there is no @fastify/swagger here): each route records a {@link RouteDoc} when it is registered.
 */
import type { TSchema } from 'typebox';
import { ErrorBodySchema } from './schemas.js';

export interface RouteDoc {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** fastify path, `:param` style. */
  url: string;
  summary: string;
  tag: string;
  params?: TSchema;
  query?: TSchema;
  body?: TSchema;
  /** An SSE stream (text/event-stream) rather than JSON. */
  stream?: boolean;
  /** Success status when not the default (201 for POST on a collection, else 200). */
  status?: number;
  /** Schema of the success answer (default: any JSON object). */
  response?: TSchema;
  /** Needs no bearer token (the network join: its own token authorises it). */
  public?: boolean;
  /** Error answers, status → description, instead of the API's usual set. */
  errors?: Record<string, string>;
}

/** A schema as plain JSON (typebox adds symbol keys that JSON drops anyway). */
function plain(s: TSchema): Record<string, unknown> {
  return JSON.parse(JSON.stringify(s)) as Record<string, unknown>;
}

function parameters(s: TSchema | undefined, where: 'path' | 'query') {
  if (s === undefined) return [];
  const o = plain(s) as { properties?: Record<string, unknown>; required?: string[] };
  return Object.entries(o.properties ?? {}).map(([name, schema]) => ({
    // fastify's wildcard `*` (the rest of the path, e.g. a kv key with '/') is documented as `{key}`.
    name: name === '*' ? 'key' : name,
    in: where,
    required: where === 'path' || (o.required ?? []).includes(name),
    schema,
  }));
}

/** The error answers of an ordinary route. */
const DEFAULT_ERRORS: Record<string, string> = {
  '400': 'invalid request (EINVAL): `field` and `reason` say what',
  '401': 'missing or wrong bearer token (EAUTH)',
  '404': 'no such resource (ENOENT)',
  '409': 'conflict (EEXIST, EBUSY, EBOUND)',
  '503': 'a node needed is unreachable (ENOTCONN, EUNAVAIL)',
};

export function buildOpenApi(routes: RouteDoc[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  const errorRef = { $ref: '#/components/schemas/Error' };
  const errorResponse = (description: string) => ({
    description,
    content: { 'application/json': { schema: errorRef } },
  });
  for (const r of routes) {
    const path = r.url.replace(/:([A-Za-z]+)/g, '{$1}').replace(/\*$/, '{key}');
    const op: Record<string, unknown> = {
      summary: r.summary,
      tags: [r.tag],
      operationId: `${r.method.toLowerCase()}${path
        .replace(/[{}]/g, '')
        .replace(/\/(\w)/g, (_m, c: string) => c.toUpperCase())
        .replace(/\W/g, '')}`,
      parameters: [...parameters(r.params, 'path'), ...parameters(r.query, 'query')],
      responses: {
        [String(r.status ?? (r.method === 'POST' && /\/(dcs|processes)$/.test(r.url) ? 201 : 200))]: r.stream
          ? { description: 'event stream', content: { 'text/event-stream': { schema: { type: 'string' } } } }
          : {
              description: 'OK',
              content: {
                'application/json': { schema: r.response ? plain(r.response) : { type: 'object' } },
              },
            },
        ...Object.fromEntries(
          Object.entries(r.errors ?? DEFAULT_ERRORS).map(([status, what]) => [status, errorResponse(what)]),
        ),
      },
    };
    // An empty requirement list overrides the document's bearer requirement (OpenAPI 3.1 §4.8.10).
    if (r.public) op.security = [];
    if (r.body !== undefined) {
      op.requestBody = { required: true, content: { 'application/json': { schema: plain(r.body) } } };
    }
    paths[path] ??= {};
    paths[path]![r.method.toLowerCase()] = op;
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'dvs REST API',
      version: '1',
      description:
        'The same operations as the dvs CLI. Every path needs `Authorization: Bearer <token>`, except the ' +
        'network join (`/api/v1/join`, `/api/v1/join/ca`), listed only by the node that holds the cluster CA ' +
        'and serves it. A node with TLS credentials serves HTTPS (docs/api.md).',
    },
    servers: [{ url: '/' }],
    security: [{ bearer: [] }],
    paths,
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: { Error: plain(ErrorBodySchema) },
    },
  };
}
