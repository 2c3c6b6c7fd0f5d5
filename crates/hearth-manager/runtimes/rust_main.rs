// Hearth's Rust runtime: this file is compiled together with a function's code (included as
// the module `function`) into one static binary, which speaks the runtime protocol in both
// modes. The function defines
//
//     pub fn handler(event: &str, context: &Context) -> Result<String, String>
//
// taking the event as JSON text and returning its result as JSON text (or an error message).
// What it prints with println! goes to the logs.
#![allow(dead_code)]

use std::io::{BufRead, Read, Write};

/// What the handler knows about its invocation.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub invocation_id: String,
    pub function_name: String,
    pub function_version: Option<u32>,
    pub deadline_ms: i64,
    pub memory_limit_mib: u64,
}

impl Context {
    pub fn remaining_ms(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        (self.deadline_ms - now).max(0)
    }
}

mod function {
    #[allow(unused_imports)]
    use super::Context;
    include!("function.rs");
}

/// JSON string escaping, for error messages.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of a plain field (a string or a number) in a flat JSON object.
fn field(obj: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\":");
    let rest = obj[obj.find(&key)? + key.len()..].trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        return Some(s[..s.find('"')?].to_string());
    }
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim().to_string())
}

fn context_of(obj: &str) -> Context {
    Context {
        invocation_id: field(obj, "invocation_id").unwrap_or_default(),
        function_name: field(obj, "function_name").unwrap_or_default(),
        function_version: field(obj, "function_version").and_then(|v| v.parse().ok()),
        deadline_ms: field(obj, "deadline_ms").and_then(|v| v.parse().ok()).unwrap_or(0),
        memory_limit_mib: field(obj, "memory_limit_mib").and_then(|v| v.parse().ok()).unwrap_or(0),
    }
}

fn call(event: &str, context: &Context) -> String {
    let result = std::panic::catch_unwind(|| function::handler(event, context));
    match result {
        Ok(Ok(json)) if json.trim().is_empty() => "{\"ok\":null}".into(),
        Ok(Ok(json)) => format!("{{\"ok\":{json}}}"),
        Ok(Err(message)) => format!("{{\"error\":{{\"message\":{},\"type\":\"Error\"}}}}", quote(&message)),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the handler panicked".into());
            format!("{{\"error\":{{\"message\":{},\"type\":\"Panic\"}}}}", quote(&format!("panic: {message}")))
        }
    }
}

/// Replies go to fd 1; stdout is pointed at stderr so that println! lands in the logs.
fn replies() -> std::fs::File {
    use std::os::fd::FromRawFd;
    // SAFETY: dup and dup2 on the process's own standard descriptors.
    unsafe {
        let fd = libc_dup(1);
        libc_dup2(2, 1);
        std::fs::File::from_raw_fd(fd)
    }
}

extern "C" {
    #[link_name = "dup"]
    fn libc_dup(fd: i32) -> i32;
    #[link_name = "dup2"]
    fn libc_dup2(from: i32, to: i32) -> i32;
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "process".into());
    let mut out = replies();
    if mode == "persistent" {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            // The host sends {"event":EVENT,"context":CONTEXT}; the context comes last and
            // holds no nested objects.
            let reply = match (line.strip_prefix("{\"event\":"), line.rfind(",\"context\":")) {
                (Some(_), Some(at)) => {
                    let event = &line[9..at];
                    let context = context_of(&line[at + 11..line.len() - 1]);
                    call(event, &context)
                }
                _ => format!("{{\"error\":{{\"message\":{}}}}}", quote("a malformed request line")),
            };
            let _ = std::io::stdout().flush();
            eprintln!("\u{1e}hearth-call-end");
            let _ = writeln!(out, "{reply}");
            let _ = out.flush();
        }
    } else {
        let mut event = String::new();
        let _ = std::io::stdin().read_to_string(&mut event);
        if event.trim().is_empty() {
            event = "null".into();
        }
        let env = |k: &str| std::env::var(k).unwrap_or_default();
        let context = Context {
            invocation_id: env("HEARTH_INVOCATION_ID"),
            function_name: env("HEARTH_FUNCTION"),
            function_version: env("HEARTH_VERSION").parse().ok(),
            deadline_ms: env("HEARTH_DEADLINE_MS").parse().unwrap_or(0),
            memory_limit_mib: env("HEARTH_MEMORY_MIB").parse().unwrap_or(0),
        };
        let reply = call(event.trim(), &context);
        let _ = std::io::stdout().flush();
        let _ = writeln!(out, "{reply}");
    }
}
