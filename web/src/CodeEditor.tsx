//! A code editor (CodeMirror 6) with highlighting for the runtime's language where one is
//! bundled; other languages get the same editor without highlighting.
import { useEffect, useRef } from "react";
import { EditorView, basicSetup } from "codemirror";
import { EditorState } from "@codemirror/state";
import { python } from "@codemirror/lang-python";
import { javascript } from "@codemirror/lang-javascript";

function language(runtime: string) {
  if (runtime === "python") return [python()];
  if (runtime === "node") return [javascript()];
  return [];
}

export function CodeEditor(props: {
  value: string;
  onChange: (v: string) => void;
  runtime: string;
  label: string;
}) {
  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView | null>(null);
  const onChange = useRef(props.onChange);
  onChange.current = props.onChange;

  useEffect(() => {
    if (!host.current) return;
    const v = new EditorView({
      parent: host.current,
      state: EditorState.create({
        doc: props.value,
        extensions: [
          basicSetup,
          ...language(props.runtime),
          EditorView.contentAttributes.of({ "aria-label": props.label }),
          EditorView.updateListener.of((u) => {
            if (u.docChanged) onChange.current(u.state.doc.toString());
          }),
        ],
      }),
    });
    view.current = v;
    return () => v.destroy();
    // The editor is rebuilt only when the language changes; text flows out through onChange.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [props.runtime, props.label]);

  // Text set from outside (a runtime's template) replaces the document.
  useEffect(() => {
    const v = view.current;
    if (v && v.state.doc.toString() !== props.value) {
      v.dispatch({ changes: { from: 0, to: v.state.doc.length, insert: props.value } });
    }
  }, [props.value]);

  return <div ref={host} className="code-editor" />;
}
