import { describe, expect, it } from "vitest";
import { ApiError, RestClient } from "../src/api.js";

function scripted(answers: (Response | Error)[]) {
  const seen: { url: string; headers: Record<string, string>; body: string | undefined }[] = [];
  const fetch = async (input: RequestInfo | URL, init: RequestInit = {}) => {
    seen.push({ url: String(input), headers: init.headers as Record<string, string>, body: init.body as string | undefined });
    const next = answers.shift();
    if (!next) throw new Error("no more answers");
    if (next instanceof Error) throw next;
    return next;
  };
  return { fetch: fetch as typeof globalThis.fetch, seen };
}

const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });

describe("RestClient", () => {
  it("retries a mutation with the same Idempotency-Key and If-Match (no answer, 429 Retry-After, 503)", async () => {
    const { fetch, seen } = scripted([
      new TypeError("fetch failed"),
      json(429, { error: { code: "rate_limited", message: "slow down" } }, { "Retry-After": "0" }),
      json(503, { error: { code: "unavailable", message: "store down" } }),
      json(201, { data: { segment: { id: 7, author_user_id: "alice", content: "x", position: 1, created_at: "t" }, seq: 2 } }),
    ]);
    const rest = new RestClient({ baseUrl: "http://ringlog.test/", userId: "alice", fetch, backoffCapMs: 1 });
    const result = await rest.appendSegment("draft_a", "x", { idempotencyKey: "key-1", ifMatch: 1 });
    expect(result.seq).toBe(2);
    expect(seen).toHaveLength(4);
    for (const r of seen) {
      expect(r.url).toBe("http://ringlog.test/v1/collab/drafts/draft_a/segments");
      expect(r.headers).toMatchObject({ "Idempotency-Key": "key-1", "If-Match": '"1"', "X-User-Id": "alice", "Content-Type": "application/json" });
      expect(JSON.parse(r.body!)).toEqual({ content: "x" });
    }
  });

  it("does not retry a refusal and reports its contract code", async () => {
    const { fetch, seen } = scripted([json(412, { error: { code: "precondition_failed", message: "head is 3" } })]);
    const rest = new RestClient({ baseUrl: "http://ringlog.test", token: "jwt", fetch });
    const err = await rest.passRing("draft_a", "bob", { ifMatch: 2 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 412, code: "precondition_failed", retryable: false });
    expect(seen).toHaveLength(1);
    expect(seen[0]!.headers.Authorization).toBe("Bearer jwt");
    expect(seen[0]!.headers["Idempotency-Key"]).toMatch(/\S{8,}/);
  });

  it("gives up after its retries with the last error", async () => {
    const { fetch, seen } = scripted([new TypeError("x"), new TypeError("x"), new TypeError("x")]);
    const rest = new RestClient({ baseUrl: "http://ringlog.test", userId: "alice", fetch, retries: 2, backoffCapMs: 1 });
    await expect(rest.appendSegment("d", "x")).rejects.toMatchObject({ status: 0, code: "network" });
    expect(new Set(seen.map((r) => r.headers["Idempotency-Key"])).size).toBe(1);
  });
});
