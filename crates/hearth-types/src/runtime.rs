//! The function runtimes Hearth knows, in one table the manager and the agent both read:
//! what each is, which Debian packages its root filesystem adds, where a function's code goes
//! and how a handler is started in it.
//!
//! Every image runtime has a shim in its image (`/opt/hearth/…`, shipped by the agent) that
//! is started as `command… MODE HANDLER`, MODE being `process` or `persistent`:
//! - `process`: the event JSON on stdin; the context in `HEARTH_INVOCATION_ID`,
//!   `HEARTH_FUNCTION`, `HEARTH_VERSION` and `HEARTH_DEADLINE_MS`; one reply line on stdout.
//! - `persistent`: one request line `{"event","context"}` on stdin per call, one reply line on
//!   stdout, after a line `\x1ehearth-call-end` on stderr that closes the call's logs (the
//!   guest protocol's `CALL_END`).
//!
//! A reply is `{"ok": RESULT}` or `{"error": {"message", "type", "stack"}}`. What the handler
//! prints goes to stderr: the invocation's logs. `native` executables speak the same protocol
//! in persistent mode; in process mode their stdout is the result (see the functions docs).

/// How a runtime's code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// An uploaded static executable, in the default image.
    Native,
    /// Source run by an interpreter in a Debian root filesystem built for the runtime.
    Image,
    /// Source compiled by the manager, at deploy, into a static executable that speaks the
    /// runtime protocol in both modes (started as `/code/handler MODE`), in the default image.
    /// (An image runtime may be compiled too: Java's shim is compiled into the code's jar.)
    Compiled,
}

#[derive(Debug)]
pub struct Runtime {
    pub name: &'static str,
    pub description: &'static str,
    /// What `handler` means for it.
    pub handler_help: &'static str,
    pub default_handler: &'static str,
    pub kind: RuntimeKind,
    /// Debian packages the root filesystem adds to a minimal base.
    pub packages: &'static [&'static str],
    /// Whether the manager compiles the code at deploy (see the manager's `compile`).
    pub compiled: bool,
    /// Where the function's code is written in the guest.
    pub code_path: &'static str,
    /// How the shim is started; the mode and the handler follow.
    pub command: &'static [&'static str],
}

/// The Debian release runtime images are built from.
pub const SUITE: &str = "bookworm";

pub const RUNTIMES: &[Runtime] = &[
    Runtime {
        name: "native",
        description: "an uploaded static executable (or a /bin/sh script), in the default image",
        handler_help: "ignored; the code is run as /code/handler",
        default_handler: "handler",
        kind: RuntimeKind::Native,
        packages: &[],
        compiled: false,
        code_path: "/code/handler",
        command: &["/code/handler"],
    },
    Runtime {
        name: "python",
        description: "Python 3.11",
        handler_help: "module.function (default handler.handler: def handler(event, context) in handler.py)",
        default_handler: "handler.handler",
        kind: RuntimeKind::Image,
        packages: &["python3"],
        compiled: false,
        code_path: "/code/handler.py",
        command: &["python3", "-u", "/opt/hearth/shim.py"],
    },
    Runtime {
        name: "node",
        description: "Node.js 18",
        handler_help: "module.function (default handler.handler: exports.handler = async (event, context) => … in handler.js)",
        default_handler: "handler.handler",
        kind: RuntimeKind::Image,
        packages: &["nodejs"],
        compiled: false,
        code_path: "/code/handler.js",
        command: &["node", "/opt/hearth/shim.js"],
    },
    Runtime {
        name: "ruby",
        description: "Ruby 3.1",
        handler_help: "file.method (default handler.handler: def handler(event:, context:) or def handler(event, context) in handler.rb)",
        default_handler: "handler.handler",
        kind: RuntimeKind::Image,
        packages: &["ruby"],
        compiled: false,
        code_path: "/code/handler.rb",
        command: &["ruby", "/opt/hearth/shim.rb"],
    },
    Runtime {
        name: "php",
        description: "PHP 8.2",
        handler_help: "file.function (default handler.handler: function handler($event, $context) in handler.php)",
        default_handler: "handler.handler",
        kind: RuntimeKind::Image,
        packages: &["php-cli"],
        compiled: false,
        code_path: "/code/handler.php",
        command: &["php", "-d", "display_errors=stderr", "/opt/hearth/shim.php"],
    },
    Runtime {
        name: "perl",
        description: "Perl 5.36",
        handler_help: "file.sub (default handler.handler: sub handler { my ($event, $context) = @_; … } in handler.pl)",
        default_handler: "handler.handler",
        kind: RuntimeKind::Image,
        packages: &["perl"],
        compiled: false,
        code_path: "/code/handler.pl",
        command: &["perl", "/opt/hearth/shim.pl"],
    },
    Runtime {
        name: "lua",
        description: "Lua 5.4 with cjson",
        handler_help: "file.function (default handler.handler: function handler(event, context) in handler.lua, global or in the returned table)",
        default_handler: "handler.handler",
        kind: RuntimeKind::Image,
        packages: &["lua5.4", "lua-cjson"],
        compiled: false,
        code_path: "/code/handler.lua",
        command: &["lua5.4", "/opt/hearth/shim.lua"],
    },
    Runtime {
        name: "bash",
        description: "Bash 5.2 with jq",
        handler_help: "file.function (default handler.handler: handler() gets the event JSON as $1 and prints its JSON result, in handler.sh)",
        default_handler: "handler.handler",
        kind: RuntimeKind::Image,
        packages: &["jq"],
        compiled: false,
        code_path: "/code/handler.sh",
        command: &["bash", "/opt/hearth/shim.sh"],
    },
    Runtime {
        name: "rust",
        description: "Rust (the manager's stable toolchain), compiled at deploy to a static binary",
        handler_help: "ignored; the code defines pub fn handler(event: &str, context: &Context) -> Result<String, String>, JSON text in and out",
        default_handler: "handler",
        kind: RuntimeKind::Compiled,
        packages: &[],
        compiled: true,
        code_path: "/code/handler",
        command: &["/code/handler"],
    },
    Runtime {
        name: "go",
        description: "Go (the manager's toolchain), compiled at deploy to a static binary",
        handler_help: "ignored; the code (package main) defines func Handler(event json.RawMessage, ctx Context) (any, error)",
        default_handler: "Handler",
        kind: RuntimeKind::Compiled,
        packages: &[],
        compiled: true,
        code_path: "/code/handler",
        command: &["/code/handler"],
    },
    Runtime {
        name: "java",
        description: "Java 17, compiled by the manager at deploy, run on a JRE (Debian root filesystem)",
        handler_help: "Class.method (default Handler.handle: public static String handle(String event, Context context), JSON text in and out)",
        default_handler: "Handler.handle",
        kind: RuntimeKind::Image,
        packages: &["openjdk-17-jre-headless"],
        compiled: true,
        code_path: "/code/handler.jar",
        command: &[
            "java",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-XX:-UsePerfData",
            "-Xss512k",
            "-cp",
            "/code/handler.jar",
            "HearthMain",
        ],
    },
];

pub fn find(name: &str) -> Option<&'static Runtime> {
    RUNTIMES.iter().find(|r| r.name == name)
}

/// The image a runtime's VMs boot.
pub fn image_name(r: &Runtime) -> String {
    match r.kind {
        RuntimeKind::Native | RuntimeKind::Compiled => "default".into(),
        RuntimeKind::Image => format!("runtime-{}", r.name),
    }
}

/// The names, for messages.
pub fn names() -> String {
    RUNTIMES
        .iter()
        .map(|r| r.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_image_runtime_names_its_packages_code_and_shim() {
        for r in RUNTIMES {
            assert!(r.code_path.starts_with("/code/"), "{}", r.name);
            assert!(!r.command.is_empty(), "{}", r.name);
            if r.kind == RuntimeKind::Image {
                assert!(!r.packages.is_empty(), "{}", r.name);
                // The shim is in the image, or compiled into the code.
                assert!(r.compiled || r.command.iter().any(|a| a.starts_with("/opt/hearth/")));
            }
            assert_eq!(
                r.kind == RuntimeKind::Compiled,
                r.compiled && r.packages.is_empty()
            );
        }
        assert_eq!(image_name(find("python").unwrap()), "runtime-python");
        assert!(find("cobol").is_none());
    }
}
