//! Networks (create, delete) and volumes (create, attach, detach, resize, delete).
import { useState } from "react";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { client, unwrap, type Schemas } from "../api/client";
import { ConfirmButton, Field, FormModal, Loaded, Page, Table, useToast, when } from "../ui";
import { useVms } from "./Vms";

export function Networks() {
  const queries = useQueryClient();
  const nets = useQuery({ queryKey: ["networks"], queryFn: () => unwrap(client.GET("/v1/networks")) });
  const [open, setOpen] = useState(false);
  const [form, setForm] = useState({ name: "", kind: "nat" as Schemas["NetworkKind"], cidr: "", bridge: "" });
  return (
    <Page
      title="Networks"
      actions={
        <button type="button" className="primary" onClick={() => setOpen(true)}>
          Create network
        </button>
      }
    >
      <FormModal
        title="Create network"
        open={open}
        onClose={() => setOpen(false)}
        submit="Create"
        onSubmit={async () => {
          await unwrap(
            client.POST("/v1/networks", {
              body: {
                name: form.name,
                kind: form.kind,
                cidr: form.cidr,
                bridge: form.kind === "bridged" ? form.bridge : undefined,
              },
            }),
          );
          await queries.invalidateQueries({ queryKey: ["networks"] });
        }}
      >
        <Field label="Name">
          <input value={form.name} onChange={(e) => setForm({ ...form, name: e.target.value })} required autoFocus />
        </Field>
        <Field label="Kind" hint="nat: egress through the host; isolated: no way out; bridged: an existing host bridge">
          <select
            value={form.kind}
            onChange={(e) => setForm({ ...form, kind: e.target.value as Schemas["NetworkKind"] })}
          >
            <option value="nat">nat</option>
            <option value="isolated">isolated</option>
            <option value="bridged">bridged</option>
          </select>
        </Field>
        <Field label="CIDR" hint="e.g. 10.90.0.0/24">
          <input value={form.cidr} onChange={(e) => setForm({ ...form, cidr: e.target.value })} required />
        </Field>
        {form.kind === "bridged" && (
          <Field label="Host bridge">
            <input value={form.bridge} onChange={(e) => setForm({ ...form, bridge: e.target.value })} required />
          </Field>
        )}
      </FormModal>
      <Loaded q={nets}>
        {(items) => (
          <Table
            label="Networks"
            rows={items}
            rowKey={(n) => n.id}
            empty="No networks. VMs use QEMU user-mode networking until one exists."
            columns={[
              { head: "Name", cell: (n) => n.name },
              { head: "Kind", cell: (n) => n.kind },
              { head: "CIDR", cell: (n) => n.cidr },
              { head: "Gateway", cell: (n) => n.gateway },
              { head: "VMs", cell: (n) => n.vm_count },
              { head: "Created", cell: (n) => when(n.created_at) },
              {
                head: "Actions",
                className: "actions-col",
                cell: (n) => (
                  <ConfirmButton
                    label="Delete"
                    question={`Delete network ${n.name}? Its bridge and rules go from every host.`}
                    onConfirm={async () => {
                      await unwrap(client.DELETE("/v1/networks/{id}", { params: { path: { id: n.id } } }));
                      await queries.invalidateQueries({ queryKey: ["networks"] });
                    }}
                  />
                ),
              },
            ]}
          />
        )}
      </Loaded>
    </Page>
  );
}

export function Volumes() {
  const queries = useQueryClient();
  const toast = useToast();
  const vols = useQuery({ queryKey: ["volumes"], queryFn: () => unwrap(client.GET("/v1/volumes")) });
  const vms = useVms();
  const [open, setOpen] = useState(false);
  const [form, setForm] = useState({ name: "", size_mib: 1024 });
  const [attach, setAttach] = useState<Schemas["Volume"] | null>(null);
  const [attachTo, setAttachTo] = useState("");
  const [resize, setResize] = useState<Schemas["Volume"] | null>(null);
  const [newSize, setNewSize] = useState(0);
  const refresh = () => queries.invalidateQueries({ queryKey: ["volumes"] });
  const said = (c: Schemas["VolumeChange"]) => toast(c.message);
  const vmName = (id?: string | null) => vms.data?.items.find((v) => v.id === id)?.name ?? id ?? "—";
  return (
    <Page
      title="Volumes"
      actions={
        <button type="button" className="primary" onClick={() => setOpen(true)}>
          Create volume
        </button>
      }
    >
      <FormModal
        title="Create volume"
        open={open}
        onClose={() => setOpen(false)}
        submit="Create"
        onSubmit={async () => {
          await unwrap(client.POST("/v1/volumes", { body: form }));
          await refresh();
        }}
      >
        <Field label="Name">
          <input value={form.name} onChange={(e) => setForm({ ...form, name: e.target.value })} required autoFocus />
        </Field>
        <Field label="Size (MiB)">
          <input
            type="number"
            min={1}
            value={form.size_mib}
            onChange={(e) => setForm({ ...form, size_mib: Number(e.target.value) })}
          />
        </Field>
      </FormModal>
      <FormModal
        title={`Attach ${attach?.name ?? ""}`}
        open={attach != null}
        onClose={() => setAttach(null)}
        submit="Attach"
        onSubmit={async () => {
          said(
            await unwrap(
              client.POST("/v1/volumes/{id}/attach", { params: { path: { id: attach!.id } }, body: { vm: attachTo } }),
            ),
          );
          await refresh();
        }}
      >
        <Field label="VM">
          <select value={attachTo} onChange={(e) => setAttachTo(e.target.value)} required>
            <option value="">Choose a VM</option>
            {vms.data?.items
              .filter((v) => !v.function_id)
              .map((v) => (
                <option key={v.id} value={v.id}>
                  {v.name} ({v.state})
                </option>
              ))}
          </select>
        </Field>
      </FormModal>
      <FormModal
        title={`Resize ${resize?.name ?? ""}`}
        open={resize != null}
        onClose={() => setResize(null)}
        submit="Resize"
        onSubmit={async () => {
          said(
            await unwrap(
              client.PATCH("/v1/volumes/{id}", { params: { path: { id: resize!.id } }, body: { size_mib: newSize } }),
            ),
          );
          await refresh();
        }}
      >
        <Field label="New size (MiB)" hint="Volumes only grow.">
          <input type="number" min={1} value={newSize} onChange={(e) => setNewSize(Number(e.target.value))} />
        </Field>
      </FormModal>
      <Loaded q={vols}>
        {(page) => (
          <Table
            label="Volumes"
            rows={page.items}
            rowKey={(v) => v.id}
            empty="No volumes. A volume is a disk that outlives the VMs it is attached to."
            columns={[
              { head: "Name", cell: (v) => v.name },
              { head: "Size", cell: (v) => `${v.size_mib} MiB` },
              { head: "Attached to", cell: (v) => vmName(v.vm_id) },
              { head: "Mounted at", cell: (v) => v.mount_path },
              {
                head: "Actions",
                className: "actions-col",
                cell: (v) => (
                  <div className="row-actions">
                    {v.vm_id ? (
                      <ConfirmButton
                        label="Detach"
                        className=""
                        question={`Detach ${v.name} from ${vmName(v.vm_id)}?`}
                        onConfirm={async () => {
                          said(await unwrap(client.POST("/v1/volumes/{id}/detach", { params: { path: { id: v.id } } })));
                          await refresh();
                        }}
                      />
                    ) : (
                      <button type="button" onClick={() => setAttach(v)}>
                        Attach
                      </button>
                    )}
                    <button
                      type="button"
                      onClick={() => {
                        setNewSize(v.size_mib * 2);
                        setResize(v);
                      }}
                    >
                      Resize
                    </button>
                    <ConfirmButton
                      label="Delete"
                      question={`Delete volume ${v.name} and its data?`}
                      onConfirm={async () => {
                        await unwrap(client.DELETE("/v1/volumes/{id}", { params: { path: { id: v.id } } }));
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
    </Page>
  );
}
