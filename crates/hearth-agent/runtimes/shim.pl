# Hearth's Perl shim: loads /code/<file>.pl and calls handler($event, $context).
#
# Started as `perl shim.pl MODE HANDLER`; see hearth_types::runtime for the protocol.
use strict;
use warnings;
use JSON::PP;
use IO::Handle;

my $mode = $ARGV[0] // 'process';
my $spec = $ARGV[1] // 'handler.handler';
my $code = $ENV{HEARTH_CODE_DIR} // '/code';
my ($file, $name) = $spec =~ /^(.*)\.([^.]+)$/ ? ($1, $2) : ($spec, 'handler');

# Replies go to the real stdout; whatever the handler prints goes to stderr, the logs.
open(my $replies, '>&', \*STDOUT) or die "dup stdout: $!";
open(STDOUT, '>&', \*STDERR) or die "redirect stdout: $!";
$replies->autoflush(1);
STDERR->autoflush(1);
STDOUT->autoflush(1);

my $json = JSON::PP->new->utf8->canonical->allow_nonref->allow_blessed->convert_blessed;

sub failure {
    my ($e) = @_;
    my $msg = "$e";
    $msg =~ s/\s+$//;
    return { error => { message => $msg, type => (ref($e) || 'Error'), stack => "$e" } };
}

sub reply {
    my ($r) = @_;
    my $line = eval { $json->encode($r) }
      // $json->encode({ error => { message => "the handler's result is not JSON: $@", type => 'TypeError' } });
    print $replies $line, "\n";
}

my ($fn, $load_error);
{
    my $path = "$code/$file.pl";
    local $@;
    my $ok = do $path;
    if ($@) {
        $load_error = failure($@);
    } elsif (!defined $ok && $!) {
        $load_error = failure("cannot read $path: $!");
    } else {
        no strict 'refs';
        $fn = defined &{"main::$name"} ? \&{"main::$name"} : undef;
        $load_error = failure("$path defines no sub $name") unless $fn;
    }
}

sub call {
    my ($event, $ctx) = @_;
    my %c = (
        invocation_id => $ctx->{invocation_id} // '',
        function_name => $ctx->{function_name} // '',
        function_version => $ctx->{function_version},
        deadline_ms => 0 + ($ctx->{deadline_ms} // 0),
        memory_limit_mib => 0 + ($ctx->{memory_limit_mib} // 0),
    );
    my $r = eval { { ok => $fn->($event, \%c) } };
    return $r // failure($@);
}

if ($mode eq 'persistent') {
    while (my $line = <STDIN>) {
        next unless $line =~ /\S/;
        my $req = eval { $json->decode($line) };
        my $r = !$req ? failure($@) : $load_error // call($req->{event}, $req->{context} // {});
        print STDERR "\x1ehearth-call-end\n";
        reply($r);
    }
} else {
    local $/;
    my $raw = <STDIN> // '';
    my $event = $raw =~ /\S/ ? eval { $json->decode($raw) } : undef;
    if ($raw =~ /\S/ && !defined $event && $@) {
        reply(failure($@));
        exit 0;
    }
    reply($load_error // call($event, {
        invocation_id => $ENV{HEARTH_INVOCATION_ID}, function_name => $ENV{HEARTH_FUNCTION},
        function_version => $ENV{HEARTH_VERSION}, deadline_ms => $ENV{HEARTH_DEADLINE_MS},
        memory_limit_mib => $ENV{HEARTH_MEMORY_MIB},
    }));
}
