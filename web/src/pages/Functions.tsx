//! Functions: the list and create dialog, and one function's page: invoke, code, versions
//! and aliases, schedules, metrics and logs.
import { useState } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { client, unwrap, type Fn, type Schemas } from "../api/client";
import {
  ActionButton,
  Badge,
  ConfirmButton,
  ErrorBox,
  Field,
  FormModal,
  LineChart,
  Loaded,
  Page,
  Spinner,
  Table,
  bytes,
  when,
  useToast,
} from "../ui";
import { CodeEditor } from "../CodeEditor";

/** A working first handler for each runtime that takes its code as one text file. */
const STARTERS: Record<string, string> = {
  python: `def handler(event, context):
    return {"hello": event.get("name", "world")}
`,
  node: `exports.handler = async (event, context) => {
  return { hello: event.name ?? "world" };
};
`,
  ruby: `def handler(event, context)
  { "hello" => event["name"] || "world" }
end
`,
  php: `<?php
function handler($event, $context) {
    return ["hello" => $event["name"] ?? "world"];
}
`,
  perl: `sub handler {
    my ($event, $context) = @_;
    return { hello => $event->{name} // "world" };
}
1;
`,
  lua: `function handler(event, context)
  return { hello = event.name or "world" }
end
`,
  bash: `handler() {
  echo "$1" | jq -c '{hello: (.name // "world")}'
}
`,
};

export function useFunctions() {
  return useQuery({
    queryKey: ["functions"],
    queryFn: () => unwrap(client.GET("/v1/functions", { params: { query: { limit: 1000 } } })),
    refetchInterval: 10000,
  });
}

export function Functions() {
  const fns = useFunctions();
  const [creating, setCreating] = useState(false);
  return (
    <Page
      title="Functions"
      actions={
        <button type="button" className="primary" onClick={() => setCreating(true)}>
          Create function
        </button>
      }
    >
      <CreateFunction open={creating} onClose={() => setCreating(false)} />
      <Loaded q={fns}>
        {(page) => (
          <Table
            label="Functions"
            rows={page.items}
            rowKey={(f) => f.id}
            empty="No functions yet. Create one: each call runs in a microVM."
            columns={[
              { head: "Name", cell: (f) => <Link to={`/functions/${f.name}`}>{f.name}</Link> },
              { head: "Runtime", cell: (f) => f.runtime },
              { head: "Mode", cell: (f) => f.mode },
              { head: "Memory", cell: (f) => `${f.memory_mib} MiB` },
              { head: "Warm", cell: (f) => `${f.min_warm}–${f.max_instances}` },
              { head: "Updated", cell: (f) => when(f.updated_at) },
            ]}
          />
        )}
      </Loaded>
    </Page>
  );
}

/** How long a deploy waits for a runtime's image to build: a few minutes is usual. */
const RUNTIME_BUILD_LIMIT_MS = 30 * 60_000;

/**
 * Builds an image runtime on the hosts that lack it and waits until some host has it,
 * reporting each host's last step; fails with the hosts' errors, or after the limit.
 */
async function buildRuntime(name: string, progress: (line: string) => void) {
  const path = { params: { path: { name } } };
  await unwrap(client.POST("/v1/runtimes/{name}/build", path));
  const started = Date.now();
  for (;;) {
    const rt = await unwrap(client.GET("/v1/runtimes/{name}", path));
    if (rt.available) return;
    const building = rt.hosts.filter((h) => h.state === "building");
    const failed = rt.hosts.filter((h) => h.state === "failed");
    if (building.length === 0 && failed.length > 0) {
      throw new Error(
        `building the ${name} runtime failed: ` + failed.map((h) => `${h.host}: ${h.error ?? "no reason given"}`).join("; "),
      );
    }
    const waited = Math.round((Date.now() - started) / 1000);
    if (Date.now() - started > RUNTIME_BUILD_LIMIT_MS) {
      throw new Error(`the ${name} runtime is still building after ${waited} s; see \`hearth runtime list\``);
    }
    progress(
      `Building the ${name} runtime (${waited} s): ` +
        (building.map((h) => `${h.host}: ${h.message ?? "starting"}`).join("; ") || "starting"),
    );
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function CreateFunction({ open, onClose }: { open: boolean; onClose: () => void }) {
  const queries = useQueryClient();
  const navigate = useNavigate();
  const runtimes = useQuery({
    queryKey: ["runtimes"],
    queryFn: () => unwrap(client.GET("/v1/runtimes")),
    enabled: open,
  });
  const [name, setName] = useState("");
  const [runtime, setRuntime] = useState("python");
  const [code, setCode] = useState(STARTERS.python!);
  const [memory, setMemory] = useState(128);
  const [progress, setProgress] = useState<string | null>(null);
  const info = runtimes.data?.items.find((r) => r.name === runtime);
  return (
    <FormModal
      title="Create function"
      open={open}
      onClose={onClose}
      submit="Deploy"
      onSubmit={async () => {
        // Asked now: the list may not have loaded, or may predate a build.
        const rt = await unwrap(client.GET("/v1/runtimes/{name}", { params: { path: { name: runtime } } }));
        if (rt.builds_image && !rt.available) {
          try {
            await buildRuntime(runtime, setProgress);
          } finally {
            setProgress(null);
            await queries.invalidateQueries({ queryKey: ["runtimes"] });
          }
        }
        const f = await unwrap(
          client.POST("/v1/functions", { body: { name, runtime, code, memory_mib: memory } }),
        );
        await queries.invalidateQueries({ queryKey: ["functions"] });
        navigate(`/functions/${f.name}`);
      }}
    >
      <Field label="Name">
        <input name="name" value={name} onChange={(e) => setName(e.target.value)} required autoFocus />
      </Field>
      <div className="field-row">
        <Field label="Runtime" hint={info ? info.description : undefined}>
          <select
            name="runtime"
            value={runtime}
            onChange={(e) => {
              setRuntime(e.target.value);
              setCode(STARTERS[e.target.value] ?? "");
            }}
          >
            {(runtimes.data?.items ?? [{ name: "python" }]).map((r) => (
              <option key={r.name} value={r.name}>
                {r.name}
              </option>
            ))}
          </select>
        </Field>
        <Field label="Memory (MiB)">
          <input
            name="memory_mib"
            type="number"
            min={128}
            step={64}
            value={memory}
            onChange={(e) => setMemory(Number(e.target.value))}
          />
        </Field>
      </div>
      {progress != null ? (
        <div data-testid="runtime-progress">
          <Spinner label={progress} />
        </div>
      ) : (
        info &&
        !info.available && (
          <p className="muted">
            {info.builds_image
              ? `The ${info.name} runtime's image is not built yet: this deploy builds it first, which takes a few minutes.`
              : info.reason}
          </p>
        )
      )}
      <Field label="Code" hint={info?.handler}>
        <CodeEditor value={code} onChange={setCode} runtime={runtime} label="Function code" />
      </Field>
      {runtimes.isError && <ErrorBox error={runtimes.error} />}
    </FormModal>
  );
}

type Tab = "invoke" | "code" | "versions" | "schedules" | "metrics" | "logs";

export function FunctionDetail() {
  const { name = "" } = useParams();
  const navigate = useNavigate();
  const queries = useQueryClient();
  const [tab, setTab] = useState<Tab>("invoke");
  const fn = useQuery({
    queryKey: ["functions", name],
    queryFn: () => unwrap(client.GET("/v1/functions/{name}", { params: { path: { name } } })),
  });
  return (
    <Page
      title={`Function ${name}`}
      actions={
        <ConfirmButton
          label="Delete"
          question={`Delete function ${name}, its versions, aliases, schedules and warm VMs?`}
          onConfirm={async () => {
            await unwrap(client.DELETE("/v1/functions/{name}", { params: { path: { name } } }));
            // The list only: this page's own query would ask for what is gone.
            await queries.invalidateQueries({ queryKey: ["functions"], exact: true });
            navigate("/functions");
          }}
        />
      }
    >
      <Loaded q={fn}>
        {(f) => (
          <>
            <dl className="facts">
              <dt>Runtime</dt>
              <dd>{f.runtime}</dd>
              <dt>Handler</dt>
              <dd>{f.handler}</dd>
              <dt>Mode</dt>
              <dd>{f.mode}</dd>
              <dt>Memory</dt>
              <dd>{f.memory_mib} MiB</dd>
              <dt>Timeout</dt>
              <dd>{f.timeout_s} s</dd>
              <dt>Pool</dt>
              <dd>
                {f.min_warm} warm, at most {f.max_instances}, idle {f.idle_ttl_s} s
              </dd>
              <dt>Code</dt>
              <dd>
                {bytes(f.code_size)} <small>{f.code_sha256.slice(0, 12)}</small>
              </dd>
            </dl>
            <div role="tablist" className="tabs" aria-label="Function views">
              {(["invoke", "code", "versions", "schedules", "metrics", "logs"] as Tab[]).map((t) => (
                <button
                  key={t}
                  type="button"
                  role="tab"
                  aria-selected={tab === t}
                  className={tab === t ? "active" : ""}
                  onClick={() => setTab(t)}
                >
                  {t[0]!.toUpperCase() + t.slice(1)}
                </button>
              ))}
            </div>
            <div role="tabpanel" className="tabpanel">
              {tab === "invoke" && <Invoke fn={f} />}
              {tab === "code" && <EditCode fn={f} />}
              {tab === "versions" && <Versions fn={f} />}
              {tab === "schedules" && <Schedules fn={f} />}
              {tab === "metrics" && <FnMetrics fn={f} />}
              {tab === "logs" && <Logs fn={f} />}
            </div>
          </>
        )}
      </Loaded>
    </Page>
  );
}

function Invoke({ fn }: { fn: Fn }) {
  const [payload, setPayload] = useState('{"name": "hearth"}');
  const [target, setTarget] = useState(fn.name);
  const [result, setResult] = useState<Schemas["InvokeResult"] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const queries = useQueryClient();
  const invoke = async () => {
    setError(null);
    let event: Record<string, never>;
    try {
      event = JSON.parse(payload);
    } catch (e) {
      setError(`the payload is not JSON: ${(e as Error).message}`);
      return;
    }
    setBusy(true);
    try {
      // Without `?async=true` the answer is the 200's InvokeResult.
      const r = await unwrap(
        client.POST("/v1/functions/{name}/invoke", { params: { path: { name: target } }, body: event }),
      );
      setResult(r as Schemas["InvokeResult"]);
      await queries.invalidateQueries({ queryKey: ["fn-logs", fn.name] });
    } catch (e) {
      setError(e);
      setResult(null);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="split">
      <form
        className="form"
        onSubmit={(e) => {
          e.preventDefault();
          void invoke();
        }}
      >
        <Field label="Target" hint="NAME, NAME:VERSION or NAME:ALIAS">
          <input name="target" value={target} onChange={(e) => setTarget(e.target.value)} />
        </Field>
        <Field label="Payload (JSON)">
          <textarea
            name="payload"
            rows={8}
            className="mono"
            value={payload}
            onChange={(e) => setPayload(e.target.value)}
          />
        </Field>
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Invoking…" : "Invoke"}
        </button>
      </form>
      <div className="result" aria-live="polite">
        {busy && <p className="loading">Running in a microVM… a cold start can take a few seconds.</p>}
        {error != null && <ErrorBox error={error} />}
        {result && (
          <>
            <p>
              {result.error ? <Badge value="error" /> : <Badge value="ok" />} {result.duration_ms} ms ·{" "}
              {result.cold_start
                ? `cold start${result.cold_start_from ? ` (${result.cold_start_from})` : ""}`
                : "warm"}
              {result.version != null && ` · version ${result.version}`}
            </p>
            <h3>Output</h3>
            <pre data-testid="invoke-output">{JSON.stringify(result.output, null, 2)}</pre>
            {result.error && (
              <>
                <h3>Error</h3>
                <pre className="error-text">
                  {result.error.message}
                  {result.error.stack ? `\n${result.error.stack}` : ""}
                </pre>
              </>
            )}
            <h3>Logs</h3>
            <pre data-testid="invoke-logs">{result.logs || "(none)"}</pre>
          </>
        )}
      </div>
    </div>
  );
}

function EditCode({ fn }: { fn: Fn }) {
  const queries = useQueryClient();
  const toast = useToast();
  const current = useQuery({
    queryKey: ["fn-code", fn.name, fn.code_sha256],
    queryFn: async () => {
      const r = await unwrap(
        client.GET("/v1/functions/{name}/code", { params: { path: { name: fn.name } }, parseAs: "text" }),
      );
      return r as unknown as string;
    },
  });
  const [code, setCode] = useState<string | null>(null);
  const [handler, setHandler] = useState(fn.handler);
  const [error, setError] = useState<unknown>(null);
  if (current.isPending) return <Spinner label="Loading the code…" />;
  if (current.isError) return <ErrorBox error={current.error} />;
  if (current.data.startsWith("\u001f\u008b") || current.data.includes("\u0000"))
    return <p className="empty">This function was deployed from a directory (an archive): redeploy it with the CLI.</p>;
  return (
    <div className="form">
      <p className="muted">Saving replaces the latest code; publish a version to pin it.</p>
      <Field label="Handler">
        <input value={handler} onChange={(e) => setHandler(e.target.value)} />
      </Field>
      <CodeEditor
        value={code ?? current.data}
        onChange={setCode}
        runtime={fn.runtime}
        label="Function code"
      />
      {error != null && <ErrorBox error={error} />}
      <div className="buttons">
        <ActionButton
          label="Save"
          className="primary"
          onClick={async () => {
            setError(null);
            try {
              await unwrap(
                client.PATCH("/v1/functions/{name}", {
                  params: { path: { name: fn.name } },
                  body: { code: code ?? current.data, handler },
                }),
              );
              toast(`Saved ${fn.name}`);
              await queries.invalidateQueries({ queryKey: ["functions"] });
            } catch (e) {
              setError(e);
            }
          }}
        />
      </div>
    </div>
  );
}

function Versions({ fn }: { fn: Fn }) {
  const queries = useQueryClient();
  const path = { params: { path: { name: fn.name } } };
  const versions = useQuery({
    queryKey: ["fn-versions", fn.name],
    queryFn: () => unwrap(client.GET("/v1/functions/{name}/versions", path)),
  });
  const aliases = useQuery({
    queryKey: ["fn-aliases", fn.name],
    queryFn: () => unwrap(client.GET("/v1/functions/{name}/aliases", path)),
  });
  const [aliasOpen, setAliasOpen] = useState(false);
  const [alias, setAlias] = useState({ name: "live", version: 1 });
  const refresh = () =>
    Promise.all([
      queries.invalidateQueries({ queryKey: ["fn-versions", fn.name] }),
      queries.invalidateQueries({ queryKey: ["fn-aliases", fn.name] }),
    ]);
  return (
    <div>
      <div className="toolbar">
        <ActionButton
          label="Publish version"
          className="primary"
          onClick={async () => {
            await unwrap(client.POST("/v1/functions/{name}/versions", path));
            await refresh();
          }}
        />
        <button type="button" onClick={() => setAliasOpen(true)}>
          Set alias
        </button>
      </div>
      <FormModal
        title="Set alias"
        open={aliasOpen}
        onClose={() => setAliasOpen(false)}
        submit="Set"
        onSubmit={async () => {
          await unwrap(
            client.PUT("/v1/functions/{name}/aliases/{alias}", {
              params: { path: { name: fn.name, alias: alias.name } },
              body: { version: alias.version },
            }),
          );
          await refresh();
        }}
      >
        <Field label="Alias">
          <input value={alias.name} onChange={(e) => setAlias({ ...alias, name: e.target.value })} required />
        </Field>
        <Field label="Version">
          <input
            type="number"
            min={1}
            value={alias.version}
            onChange={(e) => setAlias({ ...alias, version: Number(e.target.value) })}
          />
        </Field>
      </FormModal>
      <h2>Versions</h2>
      <Loaded q={versions}>
        {(page) => (
          <Table
            label="Versions"
            rows={page.items}
            rowKey={(v) => String(v.version)}
            empty="No versions published; calls run the latest code."
            columns={[
              { head: "Version", cell: (v) => v.version },
              { head: "Handler", cell: (v) => v.handler },
              { head: "Code", cell: (v) => `${bytes(v.code_size)} ${v.code_sha256.slice(0, 12)}` },
              { head: "Published", cell: (v) => when(v.created_at) },
            ]}
          />
        )}
      </Loaded>
      <h2>Aliases</h2>
      <Loaded q={aliases}>
        {(page) => (
          <Table
            label="Aliases"
            rows={page.items}
            rowKey={(a) => a.name}
            empty="No aliases."
            columns={[
              { head: "Alias", cell: (a) => a.name },
              {
                head: "Routes",
                cell: (a) =>
                  Object.entries(a.routes)
                    .map(([v, w]) => `v${v}: ${w}`)
                    .join(", "),
              },
              { head: "Updated", cell: (a) => when(a.updated_at) },
              {
                head: "Actions",
                className: "actions-col",
                cell: (a) => (
                  <ConfirmButton
                    label="Delete"
                    question={`Delete alias ${a.name}?`}
                    onConfirm={async () => {
                      await unwrap(
                        client.DELETE("/v1/functions/{name}/aliases/{alias}", {
                          params: { path: { name: fn.name, alias: a.name } },
                        }),
                      );
                      await refresh();
                    }}
                  />
                ),
              },
            ]}
          />
        )}
      </Loaded>
    </div>
  );
}

function Schedules({ fn }: { fn: Fn }) {
  const queries = useQueryClient();
  const path = { params: { path: { name: fn.name } } };
  const schedules = useQuery({
    queryKey: ["fn-schedules", fn.name],
    queryFn: () => unwrap(client.GET("/v1/functions/{name}/schedules", path)),
  });
  const [expr, setExpr] = useState("*/5 * * * *");
  const [event, setEvent] = useState("{}");
  const [error, setError] = useState<unknown>(null);
  const refresh = () => queries.invalidateQueries({ queryKey: ["fn-schedules", fn.name] });
  return (
    <div>
      <form
        className="inline-form"
        onSubmit={async (e) => {
          e.preventDefault();
          setError(null);
          try {
            await unwrap(
              client.POST("/v1/functions/{name}/schedules", { ...path, body: { expr, event: JSON.parse(event) } }),
            );
            await refresh();
          } catch (err) {
            setError(err);
          }
        }}
      >
        <Field label="Cron or rate" hint="`*/5 * * * *` or `rate(1 minute)`">
          <input value={expr} onChange={(e) => setExpr(e.target.value)} required />
        </Field>
        <Field label="Event (JSON)">
          <input className="mono" value={event} onChange={(e) => setEvent(e.target.value)} />
        </Field>
        <button type="submit">Add schedule</button>
      </form>
      {error != null && <ErrorBox error={error} />}
      <Loaded q={schedules}>
        {(page) => (
          <Table
            label="Schedules"
            rows={page.items}
            rowKey={(s) => s.id}
            empty="No schedules."
            columns={[
              { head: "Expression", cell: (s) => <code>{s.expr}</code> },
              { head: "Event", cell: (s) => <code>{JSON.stringify(s.event)}</code> },
              { head: "Next run", cell: (s) => when(s.next_run_at) },
              { head: "Last run", cell: (s) => when(s.last_run_at) },
              {
                head: "Actions",
                className: "actions-col",
                cell: (s) => (
                  <ConfirmButton
                    label="Delete"
                    question={`Delete the schedule ${s.expr}?`}
                    onConfirm={async () => {
                      await unwrap(
                        client.DELETE("/v1/functions/{name}/schedules/{id}", {
                          params: { path: { name: fn.name, id: s.id } },
                        }),
                      );
                      await refresh();
                    }}
                  />
                ),
              },
            ]}
          />
        )}
      </Loaded>
    </div>
  );
}

/** Per-minute calls and durations over the last half hour, from the kept invocations. */
function FnMetrics({ fn }: { fn: Fn }) {
  const metrics = useQuery({
    queryKey: ["fn-metrics", fn.name],
    queryFn: () => unwrap(client.GET("/v1/functions/{name}/metrics", { params: { path: { name: fn.name } } })),
    refetchInterval: 5000,
  });
  const logs = useFnLogs(fn.name);
  const minutes = 30;
  const now = Math.floor(Date.now() / 60000);
  const buckets = Array.from({ length: minutes }, () => ({ n: 0, errors: 0, ms: 0 }));
  for (const i of logs.data?.items ?? []) {
    const k = minutes - 1 - (now - Math.floor(new Date(i.at).getTime() / 60000));
    const b = buckets[k];
    if (!b) continue;
    b.n++;
    b.ms += i.duration_ms;
    if (i.status !== "ok") b.errors++;
  }
  const labels = buckets.map((_, i) => `-${minutes - 1 - i}m`);
  return (
    <div>
      <Loaded q={metrics}>
        {(m) => (
          <dl className="facts">
            <dt>Invocations</dt>
            <dd>{m.invocations}</dd>
            <dt>Errors</dt>
            <dd>{m.errors}</dd>
            <dt>Cold starts</dt>
            <dd>
              {m.cold_starts} ({m.cold_starts_from_snapshot} from snapshots)
            </dd>
            <dt>Duration</dt>
            <dd>
              p50 {m.duration_ms_p50} ms · p90 {m.duration_ms_p90} ms · p99 {m.duration_ms_p99} ms
            </dd>
            <dt>Instances</dt>
            <dd>
              {m.instances_idle} idle · {m.instances_busy} busy · {m.instances_starting} starting
            </dd>
          </dl>
        )}
      </Loaded>
      <div className="charts">
        <LineChart
          label="Invocations per minute"
          xLabels={labels}
          series={[
            { name: "calls", values: buckets.map((b) => b.n) },
            { name: "errors", values: buckets.map((b) => b.errors) },
          ]}
        />
        <LineChart
          label="Mean duration"
          unit=" ms"
          xLabels={labels}
          series={[{ name: "mean", values: buckets.map((b) => (b.n ? b.ms / b.n : 0)) }]}
        />
      </div>
    </div>
  );
}

function useFnLogs(name: string) {
  return useQuery({
    queryKey: ["fn-logs", name],
    queryFn: () =>
      unwrap(client.GET("/v1/functions/{name}/logs", { params: { path: { name }, query: { limit: 1000 } } })),
    refetchInterval: 5000,
  });
}

function Logs({ fn }: { fn: Fn }) {
  const logs = useFnLogs(fn.name);
  return (
    <Loaded q={logs}>
      {(page) => (
        <Table
          label="Invocations"
          rows={page.items.slice(0, 100)}
          rowKey={(i) => i.id}
          empty="No invocations yet."
          columns={[
            { head: "When", cell: (i) => when(i.at) },
            { head: "Status", cell: (i) => <Badge value={i.status} /> },
            { head: "Duration", cell: (i) => `${i.duration_ms} ms${i.cold_start ? " (cold)" : ""}` },
            { head: "Version", cell: (i) => i.version ?? "latest" },
            {
              head: "Logs",
              cell: (i) => (
                <pre className="log-cell">{i.error ? `${i.error.message}\n${i.logs}` : i.logs || "(none)"}</pre>
              ),
            },
          ]}
        />
      )}
    </Loaded>
  );
}
