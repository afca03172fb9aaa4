// Does every answer the server gives match what the OpenAPI document declares for it?
//
// The generated types trust the spec: `data`/`error` are typed as the declared schema of the
// declared status. An answer outside the spec (an undeclared status or media type, a `null` where
// the spec says `string`, a property the spec does not name, a missing required header) is then
// silently mistyped in every client. scenario.ts runs `Conformance.check` on each answer (an
// openapi-fetch middleware), independently of the generated types. Same rules as
// e2e/python/conformance.py: `$ref`, `allOf`, `type`, `nullable`, `properties`, `required`,
// `additionalProperties`, `items`, `enum`, `uint*` formats; undeclared properties are reported.

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
interface Schema {
  $ref?: string;
  allOf?: Schema[];
  type?: string;
  format?: string;
  nullable?: boolean;
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: boolean | Schema;
  items?: Schema;
  enum?: Json[];
}
interface MediaObject {
  schema?: Schema;
}
interface ResponseObject {
  headers?: Record<string, { required?: boolean }>;
  content?: Record<string, MediaObject>;
}
interface Operation {
  operationId: string;
  responses: Record<string, ResponseObject>;
}
export interface Spec {
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Schema> };
}

const normMedia = (v: string): string =>
  v
    .split(";")
    .map((p) => p.trim().toLowerCase())
    .filter((p) => p !== "")
    .join("; ");
const show = (v: unknown): string => (JSON.stringify(v) ?? String(v)).slice(0, 60);

export class Conformance {
  constructor(private readonly spec: Spec) {}

  private resolve(schema: Schema): Schema {
    let s = schema;
    for (let i = 0; s.$ref !== undefined; i++) {
      const ref = s.$ref;
      const name = ref.split("/").pop() ?? "";
      const next = this.spec.components.schemas[name];
      if (!ref.startsWith("#/components/schemas/") || next === undefined || i > 20) {
        throw new Error(`unsupported $ref ${ref}`);
      }
      s = next;
    }
    return s;
  }

  validate(value: unknown, schema: Schema, at: string): string[] {
    const s = this.resolve(schema);
    const errs: string[] = [];
    for (const sub of s.allOf ?? []) errs.push(...this.validate(value, sub, at));
    if (value === null) {
      if (s.type !== undefined && s.nullable !== true) {
        const name = schema.$ref !== undefined ? schema.$ref.split("/").pop() : s.type;
        errs.push(`${at} is null, the spec declares ${name} without \`nullable: true\``);
      }
      return errs;
    }
    switch (s.type) {
      case "object": {
        if (typeof value !== "object" || Array.isArray(value)) {
          return [...errs, `${at} is ${show(value)}, the spec declares object`];
        }
        const obj = value as Record<string, unknown>;
        const props = s.properties ?? {};
        for (const req of s.required ?? []) {
          if (!(req in obj)) errs.push(`${at}.${req} is missing (required by the spec)`);
        }
        const extra = s.additionalProperties;
        for (const [key, v] of Object.entries(obj)) {
          const prop = props[key];
          if (prop !== undefined) errs.push(...this.validate(v, prop, `${at}.${key}`));
          else if (typeof extra === "object") errs.push(...this.validate(v, extra, `${at}[${JSON.stringify(key)}]`));
          else if (extra !== true) errs.push(`${at}.${key} is not declared in the spec's schema`);
        }
        break;
      }
      case "array":
        if (!Array.isArray(value)) return [...errs, `${at} is ${show(value)}, the spec declares array`];
        value.forEach((v, i) => errs.push(...this.validate(v, s.items ?? {}, `${at}[${i}]`)));
        break;
      case "string":
        if (typeof value !== "string") return [...errs, `${at} is ${show(value)}, the spec declares string`];
        break;
      case "integer":
        if (typeof value !== "number" || !Number.isInteger(value)) {
          return [...errs, `${at} is ${show(value)}, the spec declares integer`];
        }
        if ((s.format ?? "").startsWith("uint") && value < 0) errs.push(`${at} is ${value}, the spec declares ${s.format}`);
        break;
      case "number":
        if (typeof value !== "number") return [...errs, `${at} is ${show(value)}, the spec declares number`];
        break;
      case "boolean":
        if (typeof value !== "boolean") return [...errs, `${at} is ${show(value)}, the spec declares boolean`];
        break;
    }
    if (s.enum !== undefined && !s.enum.some((e) => e === value)) {
      errs.push(`${at} is ${show(value)}, not one of the spec's enum ${JSON.stringify(s.enum)}`);
    }
    return errs;
  }

  /** Everything about this answer that the spec does not declare, one line each. */
  check(method: string, schemaPath: string, status: number, headers: Headers, body: string): string[] {
    const op = this.spec.paths[schemaPath]?.[method.toLowerCase()];
    if (op === undefined) return [`${method} ${schemaPath}: no operation in the spec`];
    const where = `${op.operationId} (${method.toUpperCase()} ${schemaPath})`;
    const resp = op.responses[String(status)] ?? op.responses["default"];
    if (resp === undefined) {
      return [`${where}: status ${status} is not declared (declared: ${Object.keys(op.responses).join(", ")})`];
    }
    const errs: string[] = [];
    for (const [name, h] of Object.entries(resp.headers ?? {})) {
      if (h.required === true && !headers.has(name)) errs.push(`${where} ${status}: required header ${name} is missing`);
    }
    const content = resp.content ?? {};
    const gotCt = headers.get("content-type");
    if (Object.keys(content).length === 0) {
      if (body !== "") errs.push(`${where} ${status}: the spec declares no body, the server sent ${show(body)} (${gotCt})`);
      return errs;
    }
    const media = Object.entries(content).find(([k]) => normMedia(k) === normMedia(gotCt ?? ""))?.[1];
    if (media === undefined) {
      return [
        ...errs,
        `${where} ${status}: content type ${JSON.stringify(gotCt)} is not declared (declared: ${Object.keys(content).join(", ")})`,
      ];
    }
    const base = normMedia(gotCt ?? "").split(";")[0] ?? "";
    if (base === "application/json" || base.endsWith("+json")) {
      let value: unknown;
      try {
        value = JSON.parse(body);
      } catch (e) {
        return [...errs, `${where} ${status}: body is not JSON (${String(e)}): ${show(body)}`];
      }
      errs.push(...this.validate(value, media.schema ?? {}, `${where} ${status} body`));
    }
    return errs;
  }
}
