//! Images: what hosts can boot, Debian builds with per-host progress, and uploads of OCI
//! layouts or rootfs tars with upload progress.
import { useState } from "react";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { client, getToken, unwrap, ApiError } from "../api/client";
import { Badge, ErrorBox, Field, FormModal, Loaded, Page, Table, bytes } from "../ui";

export function Images() {
  const images = useQuery({ queryKey: ["images"], queryFn: () => unwrap(client.GET("/v1/images")) });
  const [building, setBuilding] = useState(false);
  const [importing, setImporting] = useState(false);
  const [watch, setWatch] = useState<string | null>(null);
  return (
    <Page
      title="Images"
      actions={
        <>
          <button type="button" onClick={() => setImporting(true)}>
            Import
          </button>
          <button type="button" className="primary" onClick={() => setBuilding(true)}>
            Build Debian image
          </button>
        </>
      }
    >
      <BuildImage open={building} onClose={() => setBuilding(false)} onStarted={setWatch} />
      <ImportImage open={importing} onClose={() => setImporting(false)} />
      {watch && <BuildProgress name={watch} onDone={() => setWatch(null)} />}
      <Loaded q={images}>
        {(page) => (
          <Table
            label="Images"
            rows={page.items}
            rowKey={(i) => i.name}
            empty="No images yet: hosts report theirs when they join."
            columns={[
              { head: "Name", cell: (i) => i.name },
              { head: "Kind", cell: (i) => i.kind },
              { head: "Kernel", cell: (i) => i.kernel_version },
              { head: "Size", cell: (i) => bytes(i.size_bytes) },
              { head: "Hosts", cell: (i) => i.hosts.length },
            ]}
          />
        )}
      </Loaded>
    </Page>
  );
}

function BuildImage(props: { open: boolean; onClose: () => void; onStarted: (name: string) => void }) {
  const [name, setName] = useState("");
  const [packages, setPackages] = useState("");
  return (
    <FormModal
      title="Build a Debian image"
      open={props.open}
      onClose={props.onClose}
      submit="Build"
      onSubmit={async () => {
        await unwrap(
          client.POST("/v1/images/builds", {
            body: {
              name,
              packages: packages
                .split(/[\s,]+/)
                .map((p) => p.trim())
                .filter(Boolean),
            },
          }),
        );
        props.onStarted(name);
      }}
    >
      <Field label="Name">
        <input value={name} onChange={(e) => setName(e.target.value)} required autoFocus />
      </Field>
      <Field label="Packages" hint="Comma-separated, e.g. python3,curl">
        <input value={packages} onChange={(e) => setPackages(e.target.value)} />
      </Field>
    </FormModal>
  );
}

function BuildProgress({ name, onDone }: { name: string; onDone: () => void }) {
  const queries = useQueryClient();
  const build = useQuery({
    queryKey: ["image-build", name],
    queryFn: () => unwrap(client.GET("/v1/images/builds/{name}", { params: { path: { name } } })),
    refetchInterval: (q) =>
      q.state.data?.hosts.some((h) => h.state === "building") === false ? false : 2000,
  });
  const finished = build.data && !build.data.hosts.some((h) => h.state === "building");
  if (finished) void queries.invalidateQueries({ queryKey: ["images"] });
  return (
    <div className="card" role="status">
      <h2>Building {name}</h2>
      <Loaded q={build}>
        {(b) => (
          <ul className="plain">
            {b.hosts.map((h) => (
              <li key={h.host_id}>
                {h.host}: <Badge value={h.state} /> {h.message ?? ""} {h.error && <ErrorBox error={h.error} />}{" "}
                <small>{Math.round(h.elapsed_ms / 1000)} s</small>
              </li>
            ))}
          </ul>
        )}
      </Loaded>
      {finished && (
        <button type="button" onClick={onDone}>
          Dismiss
        </button>
      )}
    </div>
  );
}

async function sha256Hex(file: File): Promise<string | null> {
  // WebCrypto digests whole buffers only; past 512 MiB, let the server do without the check.
  if (!crypto.subtle || file.size > 512 << 20) return null;
  const d = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Uploads with XMLHttpRequest, the one browser API that reports upload progress. */
function upload(url: string, file: File, onProgress: (pct: number) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open("POST", url);
    x.setRequestHeader("Authorization", `Bearer ${getToken() ?? ""}`);
    x.setRequestHeader("Content-Type", "application/octet-stream");
    x.upload.onprogress = (e) => e.lengthComputable && onProgress(Math.round((e.loaded / e.total) * 100));
    x.onload = () => {
      if (x.status < 300) return resolve();
      let message = `${x.status} ${x.statusText}`;
      try {
        message = (JSON.parse(x.responseText) as { error: { message: string } }).error.message;
      } catch {
        /* not the API's JSON: keep the status line */
      }
      reject(new ApiError(x.status, message));
    };
    x.onerror = () => reject(new ApiError(0, "the upload failed: is the manager running?"));
    x.send(file);
  });
}

function ImportImage({ open, onClose }: { open: boolean; onClose: () => void }) {
  const queries = useQueryClient();
  const [name, setName] = useState("");
  const [format, setFormat] = useState("oci");
  const [file, setFile] = useState<File | null>(null);
  const [progress, setProgress] = useState<string | null>(null);
  return (
    <FormModal
      title="Import an image"
      open={open}
      onClose={onClose}
      submit="Upload"
      onSubmit={async () => {
        if (!file) throw new Error("choose a file to upload");
        setProgress("hashing…");
        const sum = await sha256Hex(file);
        const q = new URLSearchParams({ name, format });
        if (sum) q.set("sha256", sum);
        await upload(`/v1/images?${q}`, file, (p) => setProgress(p < 100 ? `uploading ${p}%` : "unpacking on the hosts…"));
        setProgress(null);
        await queries.invalidateQueries({ queryKey: ["images"] });
      }}
    >
      <Field label="Name">
        <input value={name} onChange={(e) => setName(e.target.value)} required autoFocus />
      </Field>
      <Field label="Format">
        <select value={format} onChange={(e) => setFormat(e.target.value)}>
          <option value="oci">OCI image layout or docker save (tar)</option>
          <option value="rootfs-tar">Root filesystem (tar)</option>
        </select>
      </Field>
      <Field label="File">
        <input type="file" onChange={(e) => setFile(e.target.files?.[0] ?? null)} required />
      </Field>
      {progress && <p role="status">{progress}</p>}
    </FormModal>
  );
}
