//! A terminal on one of the API's WebSockets: the serial console (read-only) or a shell
//! (a PTY: keys go up as binary frames, resizes as `{"resize":{rows,cols}}` text frames).
import { useEffect, useRef, useState } from "react";
import { Terminal as XTerm } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import "@xterm/xterm/css/xterm.css";
import { openSocket } from "./api/client";

type Status = "connecting" | "open" | "closed";

export function Terminal(props: { path: string; interactive: boolean; label: string }) {
  const host = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState<Status>("connecting");
  const [note, setNote] = useState<string | null>(null);
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    const el = host.current;
    if (!el) return;
    const term = new XTerm({
      convertEol: !props.interactive,
      cursorBlink: props.interactive,
      disableStdin: !props.interactive,
      fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace",
      fontSize: 13,
      scrollback: 5000,
      theme: { background: "#11151c" },
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(el);
    fit.fit();
    setStatus("connecting");
    setNote(null);
    const sep = props.path.includes("?") ? "&" : "?";
    const path = props.interactive
      ? `${props.path}${sep}rows=${term.rows}&cols=${term.cols}`
      : props.path;
    const ws = openSocket(path);
    const enc = new TextEncoder();
    ws.onopen = () => {
      setStatus("open");
      if (props.interactive) term.focus();
    };
    ws.onmessage = (m) => {
      if (typeof m.data === "string") {
        // Control frames: the shell's exit or an error.
        try {
          const c = JSON.parse(m.data) as { exit_code?: number; error?: string };
          if (c.error) setNote(c.error);
          else if (c.exit_code !== undefined) setNote(`the shell exited with ${c.exit_code}`);
        } catch {
          term.write(m.data);
        }
        return;
      }
      term.write(new Uint8Array(m.data as ArrayBuffer));
    };
    ws.onclose = () => setStatus("closed");
    ws.onerror = () => setNote("the connection failed: is the VM running?");
    const input = term.onData((d) => {
      if (props.interactive && ws.readyState === WebSocket.OPEN) ws.send(enc.encode(d));
    });
    const resize = term.onResize(({ rows, cols }) => {
      if (props.interactive && ws.readyState === WebSocket.OPEN)
        ws.send(JSON.stringify({ resize: { rows, cols } }));
    });
    const observer = new ResizeObserver(() => fit.fit());
    observer.observe(el);
    return () => {
      observer.disconnect();
      input.dispose();
      resize.dispose();
      ws.close();
      term.dispose();
    };
  }, [props.path, props.interactive, attempt]);

  return (
    <div className="terminal">
      <div className="terminal-bar">
        <span className={`dot dot-${status}`} aria-hidden="true" />
        <span role="status">
          {props.label}: {status}
          {note ? ` (${note})` : ""}
        </span>
        {status === "closed" && (
          <button type="button" onClick={() => setAttempt((a) => a + 1)}>
            Reconnect
          </button>
        )}
      </div>
      <div
        ref={host}
        className="terminal-screen"
        data-testid={props.interactive ? "shell" : "console"}
        aria-label={props.label}
      />
    </div>
  );
}
