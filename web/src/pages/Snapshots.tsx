//! Snapshots of every VM: restore as a new VM, delete.
import { useNavigate } from "react-router-dom";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { client, unwrap } from "../api/client";
import { ActionButton, ConfirmButton, Loaded, Page, Table, bytes, when } from "../ui";

export function Snapshots() {
  const queries = useQueryClient();
  const navigate = useNavigate();
  const snaps = useQuery({
    queryKey: ["snapshots"],
    queryFn: () => unwrap(client.GET("/v1/snapshots", { params: { query: { limit: 1000 } } })),
  });
  return (
    <Page title="Snapshots">
      <Loaded q={snaps}>
        {(page) => (
          <Table
            label="Snapshots"
            rows={page.items.filter((s) => !s.function_id)}
            rowKey={(s) => s.id}
            empty="No snapshots. Take one from a running VM's page."
            columns={[
              { head: "Name", cell: (s) => s.name },
              { head: "VM", cell: (s) => s.vm_name },
              { head: "Image", cell: (s) => s.image },
              { head: "Memory", cell: (s) => `${s.memory_mib} MiB` },
              { head: "Size", cell: (s) => bytes(s.size_bytes) },
              { head: "Saved in", cell: (s) => `${s.save_ms} ms` },
              { head: "Taken", cell: (s) => when(s.created_at) },
              {
                head: "Actions",
                className: "actions-col",
                cell: (s) => (
                  <div className="row-actions">
                    <ActionButton
                      label="Restore"
                      onClick={async () => {
                        const vm = await unwrap(
                          client.POST("/v1/snapshots/{id}/restore", { params: { path: { id: s.id } }, body: {} }),
                        );
                        await queries.invalidateQueries({ queryKey: ["vms"] });
                        navigate(`/vms/${vm.name}`);
                      }}
                    />
                    <ConfirmButton
                      label="Delete"
                      question={`Delete snapshot ${s.name}?`}
                      onConfirm={async () => {
                        await unwrap(client.DELETE("/v1/snapshots/{id}", { params: { path: { id: s.id } } }));
                        await queries.invalidateQueries({ queryKey: ["snapshots"] });
                      }}
                    />
                  </div>
                ),
              },
            ]}
          />
        )}
      </Loaded>
    </Page>
  );
}
