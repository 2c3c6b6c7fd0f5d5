//! The audit log, newest first, a page at a time.
import { useState } from "react";
import { keepPreviousData, useQuery } from "@tanstack/react-query";
import { client, unwrap } from "../api/client";
import { Loaded, Page, Table, when } from "../ui";

export function Audit() {
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const cursor = cursors.at(-1);
  const events = useQuery({
    queryKey: ["events", cursor],
    queryFn: () => unwrap(client.GET("/v1/events", { params: { query: { limit: 50, cursor } } })),
    placeholderData: keepPreviousData,
  });
  return (
    <Page title="Audit log">
      <Loaded q={events}>
        {(page) => (
          <>
            <EventTable events={page.items} />
            <div className="buttons">
              <button type="button" disabled={cursors.length < 2} onClick={() => setCursors(cursors.slice(0, -1))}>
                Newer
              </button>
              <button
                type="button"
                disabled={!page.next_cursor}
                onClick={() => setCursors([...cursors, page.next_cursor ?? undefined])}
              >
                Older
              </button>
            </div>
          </>
        )}
      </Loaded>
    </Page>
  );
}

export function EventTable({ events }: { events: import("../api/client").Schemas["Event"][] }) {
  return (
    <Table
      label="Events"
      rows={events}
      rowKey={(e) => e.id}
      empty="Nothing has happened yet."
      columns={[
        { head: "When", cell: (e) => <time dateTime={e.at}>{when(e.at)}</time> },
        { head: "Actor", cell: (e) => e.actor },
        { head: "Action", cell: (e) => <code>{e.action}</code> },
        { head: "Target", cell: (e) => e.target },
        { head: "Result", cell: (e) => `${e.status} ${e.result}` },
      ]}
    />
  );
}
