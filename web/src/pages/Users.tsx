//! Users (admins manage them) and API keys (each user manages their own).
import { useState } from "react";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { client, unwrap, type Schemas } from "../api/client";
import { ConfirmButton, Field, FormModal, Loaded, Page, Table, when } from "../ui";

export function Users() {
  const queries = useQueryClient();
  const users = useQuery({ queryKey: ["users"], queryFn: () => unwrap(client.GET("/v1/users")) });
  const keys = useQuery({ queryKey: ["api-keys"], queryFn: () => unwrap(client.GET("/v1/api-keys")) });
  const [userOpen, setUserOpen] = useState(false);
  const [user, setUser] = useState({ username: "", password: "", role: "operator" as Schemas["Role"] });
  const [keyOpen, setKeyOpen] = useState(false);
  const [key, setKey] = useState({ name: "", expires_in_days: 90 });
  const [secret, setSecret] = useState<string | null>(null);
  return (
    <Page
      title="Users & API keys"
      actions={
        <>
          <button type="button" onClick={() => setKeyOpen(true)}>
            New API key
          </button>
          <button type="button" className="primary" onClick={() => setUserOpen(true)}>
            New user
          </button>
        </>
      }
    >
      <FormModal
        title="New user"
        open={userOpen}
        onClose={() => setUserOpen(false)}
        submit="Create"
        onSubmit={async () => {
          await unwrap(client.POST("/v1/users", { body: user }));
          await queries.invalidateQueries({ queryKey: ["users"] });
        }}
      >
        <Field label="Username">
          <input value={user.username} onChange={(e) => setUser({ ...user, username: e.target.value })} required autoFocus />
        </Field>
        <Field label="Password" hint="At least 8 characters.">
          <input
            type="password"
            autoComplete="new-password"
            value={user.password}
            onChange={(e) => setUser({ ...user, password: e.target.value })}
            required
          />
        </Field>
        <Field label="Role">
          <select value={user.role} onChange={(e) => setUser({ ...user, role: e.target.value as Schemas["Role"] })}>
            <option value="viewer">viewer: reads everything</option>
            <option value="operator">operator: runs VMs and functions</option>
            <option value="admin">admin: also users, hosts and networks</option>
          </select>
        </Field>
      </FormModal>
      <FormModal
        title="New API key"
        open={keyOpen}
        onClose={() => setKeyOpen(false)}
        submit="Create"
        onSubmit={async () => {
          const k = await unwrap(client.POST("/v1/api-keys", { body: key }));
          setSecret(k.secret);
          await queries.invalidateQueries({ queryKey: ["api-keys"] });
        }}
      >
        <Field label="Name">
          <input value={key.name} onChange={(e) => setKey({ ...key, name: e.target.value })} required autoFocus />
        </Field>
        <Field label="Expires in (days)">
          <input
            type="number"
            min={1}
            value={key.expires_in_days}
            onChange={(e) => setKey({ ...key, expires_in_days: Number(e.target.value) })}
          />
        </Field>
      </FormModal>
      <FormModal
        title="Your new API key"
        open={secret != null}
        onClose={() => setSecret(null)}
        submit="I have copied it"
        onSubmit={async () => undefined}
      >
        <p>It is shown this once:</p>
        <pre className="mono wrap">{secret}</pre>
      </FormModal>
      <h2>Users</h2>
      <Loaded q={users}>
        {(page) => (
          <Table
            label="Users"
            rows={page.items}
            rowKey={(u) => u.id}
            empty="No users."
            columns={[
              { head: "Username", cell: (u) => u.username },
              { head: "Role", cell: (u) => u.role },
              { head: "Created", cell: (u) => when(u.created_at) },
              {
                head: "Actions",
                className: "actions-col",
                cell: (u) => (
                  <ConfirmButton
                    label="Delete"
                    question={`Delete user ${u.username}? Their sessions and API keys stop working.`}
                    onConfirm={async () => {
                      await unwrap(client.DELETE("/v1/users/{id}", { params: { path: { id: u.id } } }));
                      await queries.invalidateQueries({ queryKey: ["users"] });
                    }}
                  />
                ),
              },
            ]}
          />
        )}
      </Loaded>
      <h2>API keys</h2>
      <Loaded q={keys}>
        {(page) => (
          <Table
            label="API keys"
            rows={page.items}
            rowKey={(k) => k.id}
            empty="No API keys."
            columns={[
              { head: "Name", cell: (k) => k.name },
              { head: "Prefix", cell: (k) => <code>{k.prefix}…</code> },
              { head: "Role", cell: (k) => k.role },
              { head: "Last used", cell: (k) => when(k.last_used_at) },
              { head: "Expires", cell: (k) => when(k.expires_at) },
              {
                head: "Actions",
                className: "actions-col",
                cell: (k) => (
                  <ConfirmButton
                    label="Revoke"
                    question={`Revoke API key ${k.name}?`}
                    onConfirm={async () => {
                      await unwrap(client.DELETE("/v1/api-keys/{id}", { params: { path: { id: k.id } } }));
                      await queries.invalidateQueries({ queryKey: ["api-keys"] });
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
