#!/usr/bin/perl
# Verify every DKIM-Signature of one message with Mail::DKIM::Verifier,
# resolving keys from a JSON file instead of the network.
#
# Usage: mail_dkim_verify.pl DNS.json < message
#   DNS.json: {"sel._domainkey.example.com": "v=DKIM1; k=rsa; p=...", ...}
#   The message is read as raw bytes (CRLF line endings expected, as on the wire).
#
# Prints one JSON object on stdout:
#   {"version": "...", "result": "...", "result_detail": "...",
#    "signatures": [{"result": "...", "detail": "...", "domain": "...",
#                    "selector": "...", "algorithm": "..."}, ...]}
# with one "signatures" entry per DKIM-Signature header field, in header order
# (including fields Mail::DKIM could not parse at all). Exit status 0 unless the
# script itself failed.
use strict;
use warnings;

use JSON::PP ();
use Mail::DKIM;
use Mail::DKIM::DNS;
use Mail::DKIM::Verifier;
use Net::DNS;

## Offline resolver: answers TXT queries from a hash, NXDOMAIN otherwise.
## Mail::DKIM::DNS::query() only calls send() and errorstring() on it.
package MailsealFakeResolver;

sub new {
    my ( $class, $records ) = @_;
    return bless { records => $records, error => 'NOERROR' }, $class;
}

sub send {
    my ( $self, $name, $type ) = @_;
    $type = 'A' unless defined $type;
    my $key = lc $name;
    $key =~ s/\.\z//;
    my $packet = Net::DNS::Packet->new( $name, $type, 'IN' );
    $packet->header->qr(1);
    $packet->header->aa(1);
    my $text = $self->{records}{$key};
    if ( !defined $text ) {
        $packet->header->rcode('NXDOMAIN');
        return $packet;
    }
    $packet->header->rcode('NOERROR');
    if ( uc $type eq 'TXT' ) {
        # split into <=255-octet character-strings, as a real zone would
        my @chunks = length $text ? ( $text =~ /(.{1,255})/gs ) : ('');
        $packet->push(
            answer => Net::DNS::RR->new(
                name    => $name,
                type    => 'TXT',
                ttl     => 300,
                txtdata => \@chunks,
            )
        );
    }
    return $packet;
}

sub errorstring { return $_[0]{error} }

## Verifier that remembers, for every DKIM-Signature field in header order,
## either the parsed signature object or the reason it could not be parsed.
package MailsealVerifier;
use base 'Mail::DKIM::Verifier';

sub handle_header {
    my $self = shift;
    my ( $field_name, $contents, $line ) = @_;
    my $before = scalar( $self->signatures );
    $self->SUPER::handle_header(@_);
    if ( lc($field_name) eq 'dkim-signature' ) {
        my @sigs = $self->signatures;
        if ( @sigs > $before ) {
            push @{ $self->{mailseal_slots} }, { sig => $sigs[-1] };
        }
        else {
            my $why = $self->{signature_reject_reason};
            push @{ $self->{mailseal_slots} },
              { error => defined $why ? $why : 'unparseable signature' };
        }
    }
    return;
}

package main;

sub slurp {
    my ($fh) = @_;
    binmode $fh;
    local $/;
    my $data = <$fh>;
    return defined $data ? $data : '';
}

my $dns_file = shift @ARGV or die "usage: $0 DNS.json < message\n";
open my $dns_fh, '<', $dns_file or die "cannot read $dns_file: $!\n";
my $records_in = JSON::PP->new->utf8->decode( slurp($dns_fh) );
close $dns_fh;
my %records;
for my $name ( keys %$records_in ) {
    my $key = lc $name;
    $key =~ s/\.\z//;
    $records{$key} = $records_in->{$name};
}

Mail::DKIM::DNS::resolver( MailsealFakeResolver->new( \%records ) );

my $message = slurp( \*STDIN );
my $dkim    = MailsealVerifier->new();
$dkim->{mailseal_slots} = [];
$dkim->PRINT($message);
$dkim->CLOSE;

sub str { return defined $_[0] ? "$_[0]" : '' }

my @out;
for my $slot ( @{ $dkim->{mailseal_slots} } ) {
    if ( my $sig = $slot->{sig} ) {
        push @out,
          {
            result    => str( $sig->result ),
            detail    => str( $sig->result_detail ),
            domain    => str( $sig->domain ),
            selector  => str( $sig->selector ),
            algorithm => str( $sig->algorithm ),
          };
    }
    else {
        push @out,
          {
            result    => 'invalid',
            detail    => 'invalid (' . $slot->{error} . ')',
            domain    => '',
            selector  => '',
            algorithm => '',
          };
    }
}

print JSON::PP->new->utf8->canonical->encode(
    {
        version       => str($Mail::DKIM::VERSION),
        result        => str( $dkim->result ),
        result_detail => str( $dkim->result_detail ),
        signatures    => \@out,
    }
  ),
  "\n";
exit 0;
