//! The console's building blocks: pages, tables, dialogs, confirmations, toasts, badges,
//! bars and charts. Pages compose these and hold no styling of their own.
import {
  createContext,
  useCallback,
  useContext,
  useEffect,
  useRef,
  useState,
  type FormEvent,
  type ReactNode,
} from "react";
import type { UseQueryResult } from "@tanstack/react-query";
import { ApiError } from "./api/client";

export function Page(props: { title: string; actions?: ReactNode; children: ReactNode }) {
  useEffect(() => {
    document.title = `${props.title} · Hearth`;
  }, [props.title]);
  return (
    <section className="page">
      <header className="page-head">
        <h1>{props.title}</h1>
        <div className="actions">{props.actions}</div>
      </header>
      {props.children}
    </section>
  );
}

export function Spinner({ label = "Loading…" }: { label?: string }) {
  return (
    <p className="loading" role="status">
      <span className="spin" aria-hidden="true" /> {label}
    </p>
  );
}

export function errorText(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}

export function ErrorBox({ error }: { error: unknown }) {
  return (
    <p className="error" role="alert">
      {errorText(error)}
    </p>
  );
}

/** Loading, then the error, then the data. */
export function Loaded<T>(props: { q: UseQueryResult<T>; children: (data: T) => ReactNode }) {
  if (props.q.isPending) return <Spinner />;
  if (props.q.isError) return <ErrorBox error={props.q.error} />;
  return <>{props.children(props.q.data)}</>;
}

export interface Column<T> {
  head: string;
  cell: (row: T) => ReactNode;
  className?: string;
}

export function Table<T>(props: {
  rows: T[];
  columns: Column<T>[];
  rowKey: (row: T) => string;
  empty: ReactNode;
  label: string;
}) {
  if (props.rows.length === 0) return <p className="empty">{props.empty}</p>;
  return (
    <div className="table-wrap">
      <table aria-label={props.label}>
        <thead>
          <tr>
            {props.columns.map((c) => (
              <th key={c.head} scope="col" className={c.className}>
                {c.head}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {props.rows.map((r) => (
            <tr key={props.rowKey(r)}>
              {props.columns.map((c) => (
                <td key={c.head} className={c.className} data-label={c.head}>
                  {c.cell(r)}
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** A modal dialog on the native `<dialog>`: focus is trapped and Escape closes it. */
export function Modal(props: { title: string; open: boolean; onClose: () => void; children: ReactNode }) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (props.open && !d.open) d.showModal();
    if (!props.open && d.open) d.close();
  }, [props.open]);
  return (
    <dialog ref={ref} onClose={props.onClose} aria-label={props.title}>
      {props.open && (
        <>
          <h2>{props.title}</h2>
          {props.children}
        </>
      )}
    </dialog>
  );
}

/** A form in a modal: submit runs `onSubmit`; its error stays in the dialog, success closes it. */
export function FormModal(props: {
  title: string;
  open: boolean;
  onClose: () => void;
  submit: string;
  onSubmit: () => Promise<unknown>;
  children: ReactNode;
}) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    if (props.open) setError(null);
  }, [props.open]);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await props.onSubmit();
      props.onClose();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Modal title={props.title} open={props.open} onClose={props.onClose}>
      <form onSubmit={submit} className="form">
        {props.children}
        {error != null && <ErrorBox error={error} />}
        <div className="buttons">
          <button type="button" onClick={props.onClose}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={busy}>
            {busy ? "Working…" : props.submit}
          </button>
        </div>
      </form>
    </Modal>
  );
}

/** A button that asks before it acts: for everything destructive. */
export function ConfirmButton(props: {
  label: string;
  question: string;
  confirm?: string;
  onConfirm: () => Promise<unknown>;
  className?: string;
  disabled?: boolean;
}) {
  const [open, setOpen] = useState(false);
  return (
    <>
      <button
        type="button"
        className={props.className ?? "danger"}
        disabled={props.disabled}
        onClick={() => setOpen(true)}
      >
        {props.label}
      </button>
      <FormModal
        title={props.label}
        open={open}
        onClose={() => setOpen(false)}
        submit={props.confirm ?? props.label}
        onSubmit={props.onConfirm}
      >
        <p>{props.question}</p>
      </FormModal>
    </>
  );
}

/** A button for an action whose failure is toasted with the API's message. */
export function ActionButton(props: {
  label: string;
  onClick: () => Promise<unknown>;
  disabled?: boolean;
  className?: string;
}) {
  const toast = useToast();
  const [busy, setBusy] = useState(false);
  return (
    <button
      type="button"
      className={props.className}
      disabled={props.disabled || busy}
      onClick={async () => {
        setBusy(true);
        try {
          await props.onClick();
        } catch (e) {
          toast(`${props.label}: ${errorText(e)}`, "error");
        } finally {
          setBusy(false);
        }
      }}
    >
      {busy ? `${props.label}…` : props.label}
    </button>
  );
}

export function Field(props: { label: string; hint?: string; children: ReactNode }) {
  return (
    <div className="field">
      <label>
        <span>{props.label}</span>
        {props.children}
      </label>
      {props.hint && <small>{props.hint}</small>}
    </div>
  );
}

export function Badge({ value }: { value: string }) {
  return <span className={`badge badge-${value}`}>{value}</span>;
}

/** A used-of-total bar, with the figures in words for screen readers. */
export function Bar(props: { used: number; total: number; label: string; unit?: string }) {
  const pct = props.total > 0 ? Math.min(100, (props.used / props.total) * 100) : 0;
  const text = `${props.used}${props.unit ?? ""} of ${props.total}${props.unit ?? ""}`;
  return (
    <div className="bar" title={`${props.label}: ${text}`}>
      <div
        className="bar-track"
        role="meter"
        aria-label={props.label}
        aria-valuemin={0}
        aria-valuemax={props.total}
        aria-valuenow={props.used}
      >
        <div className={`bar-fill${pct > 90 ? " hot" : ""}`} style={{ width: `${pct}%` }} />
      </div>
      <small>
        {props.label} {text}
      </small>
    </div>
  );
}

/** A line chart of one or more series on a shared y axis, drawn in SVG. */
export function LineChart(props: {
  label: string;
  series: { name: string; values: number[] }[];
  max?: number;
  unit?: string;
  xLabels?: string[];
}) {
  const w = 480;
  const h = 140;
  const pad = 28;
  const all = props.series.flatMap((s) => s.values);
  const max = props.max ?? Math.max(1, ...all);
  const n = Math.max(2, ...props.series.map((s) => s.values.length));
  const x = (i: number) => pad + (i * (w - pad - 8)) / (n - 1);
  const y = (v: number) => h - 18 - (v / max) * (h - 30);
  const last = props.series.map((s) => `${s.name} ${fmt(s.values.at(-1) ?? 0)}${props.unit ?? ""}`);
  return (
    <figure className="chart">
      <figcaption>
        {props.label}
        <span className="chart-now">{last.join(" · ")}</span>
      </figcaption>
      <svg viewBox={`0 0 ${w} ${h}`} role="img" aria-label={`${props.label}: ${last.join(", ")}`}>
        {[0, 0.5, 1].map((f) => (
          <g key={f}>
            <line x1={pad} x2={w - 8} y1={y(max * f)} y2={y(max * f)} className="grid" />
            <text x={2} y={y(max * f) + 4} className="axis">
              {fmt(max * f)}
            </text>
          </g>
        ))}
        {props.xLabels?.map((l, i) =>
          i % Math.ceil(n / 6) === 0 ? (
            <text key={i} x={x(i)} y={h - 2} className="axis" textAnchor="middle">
              {l}
            </text>
          ) : null,
        )}
        {props.series.map((s, k) => (
          <polyline
            key={s.name}
            className={`line line-${k}`}
            points={s.values.map((v, i) => `${x(i)},${y(v)}`).join(" ")}
          />
        ))}
      </svg>
    </figure>
  );
}

function fmt(v: number): string {
  return v >= 100 || Number.isInteger(v) ? Math.round(v).toString() : v.toFixed(1);
}

export function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

export function when(iso?: string | null): string {
  if (!iso) return "—";
  const d = new Date(iso);
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  if (s < 0) return `in ${ago(-s)}`;
  return `${ago(s)} ago`;
}

function ago(s: number): string {
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

type Toast = { id: number; text: string; kind: "info" | "error" };
const ToastContext = createContext<(text: string, kind?: Toast["kind"]) => void>(() => {});

export function Toasts({ children }: { children: ReactNode }) {
  const [toasts, setToasts] = useState<Toast[]>([]);
  const push = useCallback((text: string, kind: Toast["kind"] = "info") => {
    const id = Date.now() + Math.random();
    setToasts((t) => [...t, { id, text, kind }]);
    setTimeout(() => setToasts((t) => t.filter((x) => x.id !== id)), kind === "error" ? 8000 : 4000);
  }, []);
  return (
    <ToastContext.Provider value={push}>
      {children}
      <div className="toasts" aria-live="polite">
        {toasts.map((t) => (
          <div key={t.id} className={`toast toast-${t.kind}`} role={t.kind === "error" ? "alert" : "status"}>
            {t.text}
            <button
              type="button"
              aria-label="Dismiss"
              onClick={() => setToasts((all) => all.filter((x) => x.id !== t.id))}
            >
              ×
            </button>
          </div>
        ))}
      </div>
    </ToastContext.Provider>
  );
}

export function useToast() {
  return useContext(ToastContext);
}
