//! Hosts: capacity and allocation, labels, VMMs and accelerators, cordon, drain and
//! uncordon, join tokens.
import { useState } from "react";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { client, unwrap, type Schemas } from "../api/client";
import { ActionButton, Badge, Bar, ConfirmButton, FormModal, Loaded, Page, bytes, when } from "../ui";

export function useHosts() {
  return useQuery({
    queryKey: ["hosts"],
    queryFn: () => unwrap(client.GET("/v1/hosts", { params: { query: { limit: 1000 } } })),
    refetchInterval: 5000,
  });
}

export function Hosts() {
  const hosts = useHosts();
  const [token, setToken] = useState<Schemas["JoinToken"] | null>(null);
  return (
    <Page
      title="Hosts"
      actions={
        <ActionButton
          label="Join token"
          onClick={async () => setToken(await unwrap(client.POST("/v1/hosts/join-tokens", { body: {} })))}
        />
      }
    >
      <FormModal
        title="Join token"
        open={token != null}
        onClose={() => setToken(null)}
        submit="Done"
        onSubmit={async () => undefined}
      >
        <p>On the new host, run (the token expires {when(token?.expires_at)}):</p>
        <pre className="mono wrap">
          hearth agent --manager {window.location.origin} --join-token {token?.token} --data-dir /var/lib/hearth
        </pre>
      </FormModal>
      <Loaded q={hosts}>
        {(page) =>
          page.items.length === 0 ? (
            <p className="empty">No hosts. `hearth up` starts a local one; others join with a token.</p>
          ) : (
            <div className="cards">
              {page.items.map((h) => (
                <HostCard key={h.id} host={h} />
              ))}
            </div>
          )
        }
      </Loaded>
    </Page>
  );
}

function HostCard({ host: h }: { host: Schemas["Host"] }) {
  const queries = useQueryClient();
  const path = { params: { path: { id: h.id } } };
  const refresh = () => queries.invalidateQueries({ queryKey: ["hosts"] });
  const [drained, setDrained] = useState<Schemas["DrainReport"] | null>(null);
  const labels = Object.entries(h.labels ?? {});
  return (
    <article className="card" aria-label={`Host ${h.name}`}>
      <h2>
        {h.name} <Badge value={h.cordoned ? "cordoned" : h.status} />
      </h2>
      <p className="muted">
        {h.address} · agent {h.agent_version} · heartbeat {when(h.last_heartbeat_at)}
      </p>
      <Bar label="vCPUs" used={h.allocated.vcpus} total={h.capacity.vcpus} />
      <Bar label="Memory" unit=" MiB" used={h.allocated.memory_mib} total={h.capacity.memory_mib} />
      {h.disk && (
        <Bar
          label="Disk (GiB)"
          used={Math.round((h.disk.total_bytes - h.disk.free_bytes) / 2 ** 30)}
          total={Math.round(h.disk.total_bytes / 2 ** 30)}
        />
      )}
      <ul className="plain">
        {labels.length > 0 && <li>labels: {labels.map(([k, v]) => `${k}=${v}`).join(", ")}</li>}
        {h.vmms.map((v) => (
          <li key={v.name}>
            {v.name}: {v.usable ? `usable${v.version ? ` (${v.version})` : ""}` : `unusable: ${v.reason ?? "?"}`}
          </li>
        ))}
        {h.accelerators.map((a) => (
          <li key={a.name}>
            {a.name}: {a.usable ? "usable" : `unusable: ${a.reason ?? "?"}`}
          </li>
        ))}
        <li>
          networks: {h.networks.managed ? "managed" : `user-mode only${h.networks.note ? ` (${h.networks.note})` : ""}`}
        </li>
        {h.disk && (
          <li>
            VM disks {bytes(h.disk.vm_disks_bytes)} · snapshots {bytes(h.disk.snapshots_bytes)}
          </li>
        )}
      </ul>
      <div className="row-actions">
        {h.cordoned ? (
          <ActionButton
            label="Uncordon"
            onClick={() => unwrap(client.POST("/v1/hosts/{id}/uncordon", path)).then(refresh)}
          />
        ) : (
          <ConfirmButton
            label="Cordon"
            className=""
            question={`Cordon ${h.name}? No new VMs are placed on it; running ones stay.`}
            onConfirm={() => unwrap(client.POST("/v1/hosts/{id}/cordon", path)).then(refresh)}
          />
        )}
        <ConfirmButton
          label="Drain"
          className=""
          question={`Drain ${h.name}? It is cordoned, and its VMs that can move are stopped and started on other hosts.`}
          onConfirm={async () => {
            setDrained(await unwrap(client.POST("/v1/hosts/{id}/drain", path)));
            await refresh();
            await queries.invalidateQueries({ queryKey: ["vms"] });
          }}
        />
      </div>
      {drained && (
        <div className="drain-report" role="status" aria-label={`Drain of ${h.name}`}>
          <p>
            {drained.moved.length} moved, {drained.stayed.length} stayed.
          </p>
          <ul className="plain">
            {drained.moved.map((m) => (
              <li key={m.vm}>
                {m.vm}
                {m.to_host ? ` → ${m.to_host}` : ""}: {m.how}
              </li>
            ))}
            {drained.stayed.map((s) => (
              <li key={s.vm}>
                {s.vm} stays: {s.reason}
              </li>
            ))}
          </ul>
        </div>
      )}
    </article>
  );
}
