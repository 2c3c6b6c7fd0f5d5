/** What a Hearth function's handler knows about its invocation. */
public final class Context {
    public final String invocationId;
    public final String functionName;
    /** The published version, or null for the latest code. */
    public final Integer functionVersion;
    public final long deadlineMs;
    public final int memoryLimitMib;

    Context(String invocationId, String functionName, Integer functionVersion, long deadlineMs,
            int memoryLimitMib) {
        this.invocationId = invocationId;
        this.functionName = functionName;
        this.functionVersion = functionVersion;
        this.deadlineMs = deadlineMs;
        this.memoryLimitMib = memoryLimitMib;
    }

    /** How long the invocation has left, in milliseconds. */
    public long remainingMs() {
        return Math.max(0, deadlineMs - System.currentTimeMillis());
    }
}
