// Hearth's Java runtime: compiled by the manager together with a function's code into one
// jar, run in the java runtime image as `java … HearthMain MODE Class.method`. The handler is
//
//     public static String handle(String event, Context context)
//
// taking the event as JSON text and returning its result as JSON text; an exception is the
// invocation's error. What it prints with System.out goes to the logs.
import java.io.BufferedReader;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;

public final class HearthMain {
    private static PrintStream replies;

    static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"': b.append("\\\""); break;
                case '\\': b.append("\\\\"); break;
                case '\n': b.append("\\n"); break;
                case '\r': b.append("\\r"); break;
                case '\t': b.append("\\t"); break;
                default:
                    if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
                    else b.append(c);
            }
        }
        return b.append('"').toString();
    }

    static String failure(Throwable t) {
        StringWriter stack = new StringWriter();
        t.printStackTrace(new PrintWriter(stack));
        return "{\"error\":{\"message\":" + quote(t.toString()) + ",\"type\":"
                + quote(t.getClass().getName()) + ",\"stack\":" + quote(stack.toString()) + "}}";
    }

    /** A plain field (a string or a number) of a flat JSON object. */
    static String field(String obj, String name) {
        String key = "\"" + name + "\":";
        int at = obj.indexOf(key);
        if (at < 0) return null;
        String rest = obj.substring(at + key.length()).trim();
        if (rest.startsWith("\"")) {
            int end = rest.indexOf('"', 1);
            return end < 0 ? null : rest.substring(1, end);
        }
        int end = rest.length();
        for (char c : new char[] {',', '}'}) {
            int i = rest.indexOf(c);
            if (i >= 0 && i < end) end = i;
        }
        String v = rest.substring(0, end).trim();
        return v.equals("null") ? null : v;
    }

    static long number(String v) {
        try {
            return v == null ? 0 : Long.parseLong(v);
        } catch (NumberFormatException e) {
            return 0;
        }
    }

    static Context context(String invocationId, String function, String version, String deadline,
            String memory) {
        return new Context(invocationId == null ? "" : invocationId,
                function == null ? "" : function,
                version == null || version.isEmpty() ? null : (int) number(version),
                number(deadline), (int) number(memory));
    }

    static String call(Method m, String event, Context ctx) {
        try {
            Object r = m.invoke(null, event, ctx);
            return "{\"ok\":" + (r == null || r.toString().isBlank() ? "null" : r.toString()) + "}";
        } catch (InvocationTargetException e) {
            return failure(e.getCause());
        } catch (Throwable t) {
            return failure(t);
        }
    }

    public static void main(String[] args) throws Exception {
        String mode = args.length > 0 ? args[0] : "process";
        String spec = args.length > 1 ? args[1] : "Handler.handle";
        replies = new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);
        System.setOut(System.err);
        int dot = spec.lastIndexOf('.');
        String cls = dot < 0 ? spec : spec.substring(0, dot);
        String name = dot < 0 ? "handle" : spec.substring(dot + 1);
        Method m = null;
        String loadError = null;
        try {
            m = Class.forName(cls).getMethod(name, String.class, Context.class);
        } catch (Throwable t) {
            loadError = failure(new IllegalStateException("no public static String " + name
                    + "(String event, Context context) in class " + cls + ": " + t, t));
        }
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        if (mode.equals("persistent")) {
            String line;
            while ((line = in.readLine()) != null) {
                line = line.trim();
                if (line.isEmpty()) continue;
                String reply;
                int at = line.lastIndexOf(",\"context\":");
                if (loadError != null) {
                    reply = loadError;
                } else if (line.startsWith("{\"event\":") && at > 0) {
                    // The host sends {"event":EVENT,"context":CONTEXT}; the context comes last.
                    String event = line.substring(9, at);
                    String c = line.substring(at + 11, line.length() - 1);
                    reply = call(m, event, context(field(c, "invocation_id"), field(c, "function_name"),
                            field(c, "function_version"), field(c, "deadline_ms"), field(c, "memory_limit_mib")));
                } else {
                    reply = "{\"error\":{\"message\":\"a malformed request line\"}}";
                }
                System.err.println("\u001ehearth-call-end");
                System.err.flush();
                replies.println(reply);
            }
            return;
        }
        StringBuilder event = new StringBuilder();
        char[] buf = new char[8192];
        int n;
        while ((n = in.read(buf)) > 0) event.append(buf, 0, n);
        String e = event.toString().trim();
        if (loadError != null) {
            replies.println(loadError);
            return;
        }
        replies.println(call(m, e.isEmpty() ? "null" : e, context(System.getenv("HEARTH_INVOCATION_ID"),
                System.getenv("HEARTH_FUNCTION"), System.getenv("HEARTH_VERSION"),
                System.getenv("HEARTH_DEADLINE_MS"), System.getenv("HEARTH_MEMORY_MIB"))));
    }
}
