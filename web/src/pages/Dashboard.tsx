//! The dashboard: hosts, VMs by state, functions, invocations per minute, recent events.
import { Link } from "react-router-dom";
import { useQuery } from "@tanstack/react-query";
import { client, unwrap } from "../api/client";
import { Badge, Bar, LineChart, Loaded, Page } from "../ui";
import { useVms } from "./Vms";
import { useFunctions } from "./Functions";
import { useHosts } from "./Hosts";
import { EventTable } from "./Audit";

export function Dashboard() {
  const vms = useVms();
  const fns = useFunctions();
  const hosts = useHosts();
  const rate = useQuery({
    queryKey: ["invocation-rate"],
    queryFn: () => unwrap(client.GET("/v1/stats/invocations", { params: { query: { minutes: 30 } } })),
    refetchInterval: 10000,
  });
  const events = useQuery({
    queryKey: ["events", "recent"],
    queryFn: () => unwrap(client.GET("/v1/events", { params: { query: { limit: 8 } } })),
    refetchInterval: 10000,
  });
  return (
    <Page title="Dashboard">
      <div className="tiles">
        <section className="card tile" aria-label="Hosts">
          <h2>
            <Link to="/hosts">Hosts</Link>
          </h2>
          <Loaded q={hosts}>
            {(p) => {
              const up = p.items.filter((h) => h.status === "up").length;
              const cap = p.items.reduce((a, h) => a + h.capacity.memory_mib, 0);
              const used = p.items.reduce((a, h) => a + h.allocated.memory_mib, 0);
              return (
                <>
                  <p className="big">
                    {up}/{p.items.length} <small>up</small>
                  </p>
                  <Bar label="Memory" unit=" MiB" used={used} total={cap} />
                </>
              );
            }}
          </Loaded>
        </section>
        <section className="card tile" aria-label="VMs">
          <h2>
            <Link to="/vms">VMs</Link>
          </h2>
          <Loaded q={vms}>
            {(p) => {
              const mine = p.items.filter((v) => !v.function_id);
              const by = new Map<string, number>();
              for (const v of mine) by.set(v.state, (by.get(v.state) ?? 0) + 1);
              return (
                <>
                  <p className="big">{mine.length}</p>
                  <p>
                    {[...by].map(([s, n]) => (
                      <span key={s} className="state-count">
                        <Badge value={s} /> {n}
                      </span>
                    ))}
                  </p>
                </>
              );
            }}
          </Loaded>
        </section>
        <section className="card tile" aria-label="Functions">
          <h2>
            <Link to="/functions">Functions</Link>
          </h2>
          <Loaded q={fns}>
            {(p) => (
              <>
                <p className="big">{p.items.length}</p>
                <p className="muted">
                  {vms.data?.items.filter((v) => v.function_id && v.state === "running").length ?? 0} warm
                  instances
                </p>
              </>
            )}
          </Loaded>
        </section>
      </div>
      <section className="card" aria-label="Invocations per minute">
        <Loaded q={rate}>
          {(r) => (
            <LineChart
              label="Invocations per minute (last 30 minutes)"
              xLabels={r.minutes.map((m) => new Date(m.at).toTimeString().slice(0, 5))}
              series={[
                { name: "calls", values: r.minutes.map((m) => m.invocations) },
                { name: "errors", values: r.minutes.map((m) => m.errors) },
              ]}
            />
          )}
        </Loaded>
      </section>
      <section aria-label="Recent events">
        <h2>
          <Link to="/audit">Recent events</Link>
        </h2>
        <Loaded q={events}>{(p) => <EventTable events={p.items} />}</Loaded>
      </section>
    </Page>
  );
}
