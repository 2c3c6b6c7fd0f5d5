<?php
// Hearth's PHP shim: includes /code/<file>.php and calls handler($event, $context).
//
// Started as `php shim.php MODE HANDLER`; see hearth_types::runtime for the protocol.
$mode = $argv[1] ?? 'process';
$spec = $argv[2] ?? 'handler.handler';
$code = getenv('HEARTH_CODE_DIR') ?: '/code';
$dot = strrpos($spec, '.');
[$file, $name] = $dot === false ? [$spec, 'handler'] : [substr($spec, 0, $dot), substr($spec, $dot + 1)];

// Replies go to STDOUT directly; whatever the handler echoes goes to stderr, the logs.
ob_start(function ($buf) { fwrite(STDERR, $buf); return ''; }, 1);

function hearth_failure(Throwable $e): array {
    return ['error' => [
        'message' => get_class($e) . ': ' . $e->getMessage(),
        'type' => get_class($e),
        'stack' => $e->getFile() . ':' . $e->getLine() . "\n" . $e->getTraceAsString(),
    ]];
}

function hearth_reply(array $r): void {
    $line = json_encode($r, JSON_UNESCAPED_SLASHES | JSON_PRESERVE_ZERO_FRACTION);
    if ($line === false) {
        $line = json_encode(['error' => [
            'message' => "the handler's result is not JSON: " . json_last_error_msg(),
            'type' => 'TypeError',
        ]]);
    }
    ob_flush();
    fwrite(STDOUT, $line . "\n");
    fflush(STDOUT);
}

function hearth_context(array $c): array {
    $deadline = (int)($c['deadline_ms'] ?? 0);
    return [
        'invocation_id' => (string)($c['invocation_id'] ?? ''),
        'function_name' => (string)($c['function_name'] ?? ''),
        'function_version' => $c['function_version'] ?? null,
        'deadline_ms' => $deadline,
        'memory_limit_mib' => (int)($c['memory_limit_mib'] ?? 0),
    ];
}

function hearth_call(callable $fn, $event, array $ctx): array {
    try {
        return ['ok' => $fn($event, hearth_context($ctx))];
    } catch (Throwable $e) {
        return hearth_failure($e);
    }
}

$load_error = null;
$fn = null;
try {
    require_once "$code/$file.php";
    if (!function_exists($name)) {
        throw new Error("$code/$file.php defines no function $name");
    }
    $fn = $name;
} catch (Throwable $e) {
    $load_error = hearth_failure($e);
}

if ($mode === 'persistent') {
    while (($line = fgets(STDIN)) !== false) {
        if (trim($line) === '') continue;
        try {
            $req = json_decode($line, true, 512, JSON_THROW_ON_ERROR);
            $r = $load_error ?? hearth_call($fn, $req['event'] ?? null, $req['context'] ?? []);
        } catch (Throwable $e) {
            $r = hearth_failure($e);
        }
        ob_flush();
        fwrite(STDERR, "\x1ehearth-call-end\n");
        hearth_reply($r);
    }
} else {
    $raw = stream_get_contents(STDIN);
    try {
        $event = trim($raw) === '' ? null : json_decode($raw, true, 512, JSON_THROW_ON_ERROR);
        hearth_reply($load_error ?? hearth_call($fn, $event, [
            'invocation_id' => getenv('HEARTH_INVOCATION_ID'),
            'function_name' => getenv('HEARTH_FUNCTION'),
            'function_version' => getenv('HEARTH_VERSION') ?: null,
            'deadline_ms' => getenv('HEARTH_DEADLINE_MS'),
            'memory_limit_mib' => getenv('HEARTH_MEMORY_MIB'),
        ]));
    } catch (Throwable $e) {
        hearth_reply(hearth_failure($e));
    }
}
