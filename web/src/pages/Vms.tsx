//! VMs: the list with its create dialog and actions, and one VM's page with its serial
//! console, shell, live metrics, port forwards and snapshots.
import { useEffect, useState } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { client, openSocket, unwrap, type Schemas, type Vm } from "../api/client";
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
  Table,
  bytes,
  when,
  useToast,
} from "../ui";
import { Terminal } from "../Terminal";

const BUSY: Vm["state"][] = ["creating", "starting", "stopping", "deleting"];

export function useVms() {
  return useQuery({
    queryKey: ["vms"],
    queryFn: () => unwrap(client.GET("/v1/vms", { params: { query: { limit: 1000 } } })),
    // Poll quickly while something is changing, slowly otherwise.
    refetchInterval: (q) =>
      q.state.data?.items.some((v) => BUSY.includes(v.state)) ? 1000 : 5000,
  });
}

/** Start, stop, pause, resume and delete, as the VM's state allows. */
function VmActions({ vm, onDeleted }: { vm: Vm; onDeleted?: () => void }) {
  const queries = useQueryClient();
  const path = { params: { path: { id: vm.id } } };
  const done = () => queries.invalidateQueries({ queryKey: ["vms"] });
  const run = (p: Promise<{ error?: unknown; response: Response; data?: unknown }>) =>
    unwrap(p).then(done);
  const s = vm.state;
  return (
    <div className="row-actions">
      {(s === "stopped" || s === "failed") && (
        <ActionButton label="Start" onClick={() => run(client.POST("/v1/vms/{id}/start", path))} />
      )}
      {s === "running" && (
        <>
          <ActionButton label="Stop" onClick={() => run(client.POST("/v1/vms/{id}/stop", path))} />
          <ActionButton label="Pause" onClick={() => run(client.POST("/v1/vms/{id}/pause", path))} />
        </>
      )}
      {s === "paused" && (
        <ActionButton label="Resume" onClick={() => run(client.POST("/v1/vms/{id}/resume", path))} />
      )}
      <ConfirmButton
        label="Delete"
        question={`Delete VM ${vm.name}? Its disk is deleted with it; its snapshots are kept.`}
        disabled={s === "deleting"}
        onConfirm={async () => {
          await unwrap(client.DELETE("/v1/vms/{id}", path));
          // The list only: the VM's own page would ask for what is gone.
          await queries.invalidateQueries({ queryKey: ["vms"], exact: true });
          onDeleted?.();
        }}
      />
    </div>
  );
}

export function Vms() {
  const vms = useVms();
  const [creating, setCreating] = useState(false);
  return (
    <Page
      title="VMs"
      actions={
        <button type="button" className="primary" onClick={() => setCreating(true)}>
          Create VM
        </button>
      }
    >
      <CreateVm open={creating} onClose={() => setCreating(false)} />
      <Loaded q={vms}>
        {(page) => (
          <Table
            label="VMs"
            rows={page.items.filter((v) => !v.function_id)}
            rowKey={(v) => v.id}
            empty="No VMs yet. Create one to boot a microVM."
            columns={[
              { head: "Name", cell: (v) => <Link to={`/vms/${v.name}`}>{v.name}</Link> },
              { head: "State", cell: (v) => <Badge value={v.state} /> },
              { head: "IP", cell: (v) => v.ip ?? (v.network === "user" ? "user-net" : "—") },
              { head: "Image", cell: (v) => v.image },
              { head: "Size", cell: (v) => `${v.vcpus} vCPU · ${v.memory_mib} MiB` },
              { head: "Created", cell: (v) => when(v.created_at) },
              { head: "Actions", cell: (v) => <VmActions vm={v} />, className: "actions-col" },
            ]}
          />
        )}
      </Loaded>
    </Page>
  );
}

function CreateVm({ open, onClose }: { open: boolean; onClose: () => void }) {
  const queries = useQueryClient();
  const navigate = useNavigate();
  const images = useQuery({
    queryKey: ["images"],
    queryFn: () => unwrap(client.GET("/v1/images")),
    enabled: open,
  });
  const networks = useQuery({
    queryKey: ["networks"],
    queryFn: () => unwrap(client.GET("/v1/networks")),
    enabled: open,
  });
  const [form, setForm] = useState({
    name: "",
    image: "default",
    vcpus: 1,
    memory_mib: 256,
    network: "",
    vmm: "",
    host_labels: "",
  });
  const set = (k: keyof typeof form) => (e: { target: { value: string } }) =>
    setForm({ ...form, [k]: typeof form[k] === "number" ? Number(e.target.value) : e.target.value });
  return (
    <FormModal
      title="Create VM"
      open={open}
      onClose={onClose}
      submit="Create"
      onSubmit={async () => {
        const host_labels: Record<string, string> = {};
        for (const kv of form.host_labels.split(",").map((s) => s.trim()).filter(Boolean)) {
          const at = kv.indexOf("=");
          if (at < 1) throw new Error(`host label ${JSON.stringify(kv)}: write KEY=VALUE`);
          host_labels[kv.slice(0, at)] = kv.slice(at + 1);
        }
        const vm = await unwrap(
          client.POST("/v1/vms", {
            body: {
              name: form.name,
              image: form.image,
              vcpus: form.vcpus,
              memory_mib: form.memory_mib,
              network: form.network || undefined,
              vmm: form.vmm || undefined,
              host_labels,
            },
          }),
        );
        await queries.invalidateQueries({ queryKey: ["vms"] });
        navigate(`/vms/${vm.name}`);
      }}
    >
      <Field label="Name" hint="Lowercase letters, digits and dashes.">
        <input name="name" value={form.name} onChange={set("name")} required autoFocus />
      </Field>
      <Field label="Image">
        <select name="image" value={form.image} onChange={set("image")}>
          {(images.data?.items ?? [{ name: "default" }]).map((i) => (
            <option key={i.name} value={i.name}>
              {i.name}
            </option>
          ))}
        </select>
      </Field>
      <div className="field-row">
        <Field label="vCPUs">
          <input name="vcpus" type="number" min={1} max={64} value={form.vcpus} onChange={set("vcpus")} />
        </Field>
        <Field label="Memory (MiB)">
          <input
            name="memory_mib"
            type="number"
            min={128}
            step={64}
            value={form.memory_mib}
            onChange={set("memory_mib")}
          />
        </Field>
      </div>
      <Field label="Network" hint="Default: the network named default, else none.">
        <select name="network" value={form.network} onChange={set("network")}>
          <option value="">(default)</option>
          <option value="user">user (QEMU user-mode)</option>
          <option value="none">none</option>
          {networks.data?.map((n) => (
            <option key={n.id} value={n.name}>
              {n.name} ({n.kind} {n.cidr})
            </option>
          ))}
        </select>
      </Field>
      <Field
        label="VMM"
        hint="Default: the host's best usable one (Firecracker on hardware KVM, else QEMU). Firecracker and Cloud Hypervisor have no user-mode networking."
      >
        <select name="vmm" value={form.vmm} onChange={set("vmm")}>
          <option value="">(host default)</option>
          <option value="qemu">QEMU</option>
          <option value="firecracker">Firecracker</option>
          <option value="cloud-hypervisor">Cloud Hypervisor</option>
        </select>
      </Field>
      <Field label="Host labels" hint="KEY=VALUE, comma-separated: only hosts with every one of them.">
        <input name="host_labels" value={form.host_labels} onChange={set("host_labels")} placeholder="zone=a" />
      </Field>
      {images.isError && <ErrorBox error={images.error} />}
    </FormModal>
  );
}

type Tab = "console" | "shell" | "metrics" | "snapshots" | "ports";

export function VmDetail() {
  const { id = "" } = useParams();
  const navigate = useNavigate();
  const [tab, setTab] = useState<Tab>("console");
  const vm = useQuery({
    queryKey: ["vms", id],
    queryFn: () => unwrap(client.GET("/v1/vms/{id}", { params: { path: { id } } })),
    refetchInterval: (q) => (q.state.data && BUSY.includes(q.state.data.state) ? 1000 : 4000),
  });
  return (
    <Page title={`VM ${id}`} actions={vm.data && <VmActions vm={vm.data} onDeleted={() => navigate("/vms")} />}>
      <Loaded q={vm}>
        {(v) => (
          <>
            <dl className="facts">
              <dt>State</dt>
              <dd>
                <Badge value={v.state} /> {v.reason && <small>{v.reason}</small>}
              </dd>
              <dt>IP</dt>
              <dd>{v.ip ?? "—"}</dd>
              <dt>Network</dt>
              <dd>
                {v.network} {v.network_note && <small>{v.network_note}</small>}
              </dd>
              <dt>Image</dt>
              <dd>{v.image}</dd>
              <dt>Size</dt>
              <dd>
                {v.vcpus} vCPU · {v.memory_mib} MiB · disk {v.disk_mib} MiB
              </dd>
              <dt>VMM</dt>
              <dd>
                {v.vmm}
                {v.accelerator ? ` (${v.accelerator})` : ""}
              </dd>
              <dt>Host</dt>
              <dd>
                {v.host_id ?? "—"}
                {Object.keys(v.host_labels ?? {}).length > 0 && (
                  <small>
                    {" "}
                    labels{" "}
                    {Object.entries(v.host_labels)
                      .map(([k, l]) => `${k}=${l}`)
                      .join(", ")}
                  </small>
                )}
              </dd>
              <dt>Booted in</dt>
              <dd>{v.boot_ms != null ? `${v.boot_ms} ms` : "—"}</dd>
            </dl>
            <div role="tablist" className="tabs" aria-label="VM views">
              {(["console", "shell", "metrics", "snapshots", "ports"] as Tab[]).map((t) => (
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
              {tab === "console" && (
                <Terminal path={`/v1/vms/${v.id}/console`} interactive={false} label="Serial console" />
              )}
              {tab === "shell" &&
                (v.state === "running" ? (
                  <Terminal path={`/v1/vms/${v.id}/shell`} interactive label="Shell" />
                ) : (
                  <p className="empty">The shell needs a running VM; this one is {v.state}.</p>
                ))}
              {tab === "metrics" &&
                (v.state === "running" ? (
                  <Metrics id={v.id} />
                ) : (
                  <p className="empty">Metrics come from a running VM; this one is {v.state}.</p>
                ))}
              {tab === "snapshots" && <VmSnapshots vm={v} />}
              {tab === "ports" && <Ports vm={v} />}
            </div>
          </>
        )}
      </Loaded>
    </Page>
  );
}

/** Live CPU and memory from the metrics WebSocket (one frame a second), last two minutes. */
function Metrics({ id }: { id: string }) {
  const [samples, setSamples] = useState<Schemas["VmMetrics"][]>([]);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    const ws = openSocket(`/v1/vms/${id}/metrics`);
    ws.onmessage = (m) => {
      const s = JSON.parse(m.data as string) as Schemas["VmMetrics"] & { error?: string };
      if (s.error) setError(s.error);
      else setSamples((all) => [...all.slice(-119), s]);
    };
    ws.onerror = () => setError("the metrics stream failed");
    return () => ws.close();
  }, [id]);
  const last = samples.at(-1);
  return (
    <div>
      {error && <ErrorBox error={error} />}
      <div className="charts">
        <LineChart
          label="CPU"
          unit="%"
          max={100}
          series={[{ name: "cpu", values: samples.map((s) => s.cpu_percent) }]}
        />
        <LineChart
          label="Memory"
          unit=" MiB"
          max={last?.memory_total_mib}
          series={[{ name: "used", values: samples.map((s) => s.memory_used_mib) }]}
        />
      </div>
      {last && (
        <p className="muted">
          load {last.load1.toFixed(2)} {last.load5.toFixed(2)} {last.load15.toFixed(2)} ·{" "}
          {last.processes} processes · disk {last.disk_used_mib}/{last.disk_total_mib} MiB · up{" "}
          {last.uptime_s}s
        </p>
      )}
    </div>
  );
}

function VmSnapshots({ vm }: { vm: Vm }) {
  const queries = useQueryClient();
  const navigate = useNavigate();
  const toast = useToast();
  const snaps = useQuery({
    queryKey: ["snapshots", vm.id],
    queryFn: () => unwrap(client.GET("/v1/snapshots", { params: { query: { vm: vm.id } } })),
  });
  const refresh = () => queries.invalidateQueries({ queryKey: ["snapshots"] });
  return (
    <div>
      <div className="toolbar">
        <ActionButton
          label="Take snapshot"
          className="primary"
          disabled={vm.state !== "running" && vm.state !== "paused"}
          onClick={async () => {
            const s = await unwrap(
              client.POST("/v1/vms/{id}/snapshots", { params: { path: { id: vm.id } }, body: {} }),
            );
            toast(`Snapshot ${s.name} taken (${s.save_ms} ms)`);
            await refresh();
          }}
        />
      </div>
      <Loaded q={snaps}>
        {(page) => (
          <Table
            label="Snapshots of this VM"
            rows={page.items}
            rowKey={(s) => s.id}
            empty="No snapshots of this VM."
            columns={[
              { head: "Name", cell: (s) => s.name },
              { head: "Size", cell: (s) => bytes(s.size_bytes) },
              { head: "Taken", cell: (s) => when(s.created_at) },
              {
                head: "Actions",
                className: "actions-col",
                cell: (s) => (
                  <div className="row-actions">
                    <ActionButton
                      label="Restore as new VM"
                      onClick={async () => {
                        const v = await unwrap(
                          client.POST("/v1/snapshots/{id}/restore", {
                            params: { path: { id: s.id } },
                            body: {},
                          }),
                        );
                        await queries.invalidateQueries({ queryKey: ["vms"] });
                        navigate(`/vms/${v.name}`);
                      }}
                    />
                    <ConfirmButton
                      label="Restore in place"
                      className=""
                      question={`Roll ${vm.name} back to ${s.name}? What it did since is lost.`}
                      onConfirm={async () => {
                        await unwrap(
                          client.POST("/v1/snapshots/{id}/restore", {
                            params: { path: { id: s.id } },
                            body: { in_place: true },
                          }),
                        );
                        await queries.invalidateQueries({ queryKey: ["vms"] });
                      }}
                    />
                    <ConfirmButton
                      label="Delete"
                      question={`Delete snapshot ${s.name}?`}
                      onConfirm={async () => {
                        await unwrap(client.DELETE("/v1/snapshots/{id}", { params: { path: { id: s.id } } }));
                        await refresh();
                      }}
                    />
                  </div>
                ),
              },
            ]}
          />
        )}
      </Loaded>
    </div>
  );
}

function Ports({ vm }: { vm: Vm }) {
  const queries = useQueryClient();
  const [hostPort, setHostPort] = useState("");
  const [guestPort, setGuestPort] = useState("");
  const [error, setError] = useState<unknown>(null);
  const refresh = () => queries.invalidateQueries({ queryKey: ["vms"] });
  return (
    <div>
      <form
        className="inline-form"
        onSubmit={async (e) => {
          e.preventDefault();
          setError(null);
          try {
            await unwrap(
              client.POST("/v1/vms/{id}/ports", {
                params: { path: { id: vm.id } },
                body: { host_port: Number(hostPort), guest_port: Number(guestPort) },
              }),
            );
            setHostPort("");
            setGuestPort("");
            await refresh();
          } catch (err) {
            setError(err);
          }
        }}
      >
        <Field label="Host port">
          <input value={hostPort} onChange={(e) => setHostPort(e.target.value)} inputMode="numeric" required />
        </Field>
        <Field label="Guest port">
          <input value={guestPort} onChange={(e) => setGuestPort(e.target.value)} inputMode="numeric" required />
        </Field>
        <button type="submit">Add forward</button>
      </form>
      {error != null && <ErrorBox error={error} />}
      <Table
        label="Port forwards"
        rows={vm.ports}
        rowKey={(p) => `${p.protocol}${p.host_port}`}
        empty="No port forwards."
        columns={[
          { head: "Host", cell: (p) => `127.0.0.1:${p.host_port}` },
          { head: "Guest", cell: (p) => p.guest_port },
          { head: "Protocol", cell: (p) => p.protocol ?? "tcp" },
          {
            head: "Actions",
            className: "actions-col",
            cell: (p) => (
              <ConfirmButton
                label="Remove"
                question={`Remove the forward of host port ${p.host_port}?`}
                onConfirm={async () => {
                  await unwrap(
                    client.DELETE("/v1/vms/{id}/ports/{host_port}", {
                      params: {
                        path: { id: vm.id, host_port: p.host_port },
                        query: { protocol: p.protocol },
                      },
                    }),
                  );
                  await refresh();
                }}
              />
            ),
          },
        ]}
      />
    </div>
  );
}
