# Hearth's Ruby shim: loads /code/<file>.rb and calls handler(event, context) (or
# handler(event:, context:)).
#
# Started as `ruby shim.rb MODE HANDLER`; see hearth_types::runtime for the protocol.
require 'json'

MODE = ARGV[0] || 'process'
SPEC = ARGV[1] || 'handler.handler'
CODE = ENV['HEARTH_CODE_DIR'] || '/code'
CALL_END = "\x1ehearth-call-end\n"

# Replies go to the real stdout; whatever the handler prints goes to stderr, the logs.
REPLIES = $stdout.dup
REPLIES.sync = true
$stdout.reopen($stderr)
$stderr.sync = true

Context = Struct.new(:invocation_id, :function_name, :function_version, :deadline_ms,
                     :memory_limit_mib) do
  def remaining_ms
    [0, deadline_ms - (Time.now.to_f * 1000).to_i].max
  end
end

def context_of(c)
  Context.new(c['invocation_id'].to_s, c['function_name'].to_s, c['function_version'],
              c['deadline_ms'].to_i, c['memory_limit_mib'].to_i)
end

def failure(e)
  { error: { message: "#{e.class}: #{e.message}", type: e.class.name,
             stack: ([e.message] + (e.backtrace || []).reject { |l| l.start_with?(__FILE__) }).join("\n") } }
end

def load_handler
  file, _, name = SPEC.rpartition('.')
  file, name = name, 'handler' if file.empty?
  load File.join(CODE, "#{file}.rb")
  raise NameError, "#{CODE}/#{file}.rb defines no method #{name}" unless Object.private_method_defined?(name) || Object.method_defined?(name)
  method(name)
end

def call(fn, event, ctx)
  keywords = fn.parameters.any? { |kind, _| %i[key keyreq].include?(kind) }
  { ok: keywords ? fn.call(event: event, context: context_of(ctx)) : fn.call(event, context_of(ctx)) }
rescue Exception => e # rubocop:disable Lint/RescueException -- a handler's exit is its error too
  failure(e)
end

def reply(r)
  line = begin
    JSON.generate(r)
  rescue StandardError => e
    JSON.generate({ error: { message: "the handler's result is not JSON: #{e.message}", type: 'TypeError' } })
  end
  $stderr.flush
  REPLIES.write(line + "\n")
end

begin
  fn = load_handler
  load_error = nil
rescue Exception => e # rubocop:disable Lint/RescueException -- syntax errors are ScriptErrors
  load_error = failure(e)
end

if MODE == 'persistent'
  $stdin.each_line do |line|
    next if line.strip.empty?
    r = begin
      req = JSON.parse(line)
      load_error || call(fn, req['event'], req['context'] || {})
    rescue JSON::ParserError => e
      failure(e)
    end
    $stdout.flush
    $stderr.write(CALL_END)
    reply(r)
  end
else
  raw = $stdin.read
  begin
    event = raw.strip.empty? ? nil : JSON.parse(raw, quirks_mode: true)
    reply(load_error || call(fn, event, {
      'invocation_id' => ENV['HEARTH_INVOCATION_ID'], 'function_name' => ENV['HEARTH_FUNCTION'],
      'function_version' => ENV['HEARTH_VERSION'], 'deadline_ms' => ENV['HEARTH_DEADLINE_MS'],
      'memory_limit_mib' => ENV['HEARTH_MEMORY_MIB']
    }))
  rescue JSON::ParserError => e
    reply(failure(e))
  end
end
