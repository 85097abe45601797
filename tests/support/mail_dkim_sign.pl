#!/usr/bin/perl
# Sign one message with Mail::DKIM::Signer and print the DKIM-Signature header
# field (name, value, folding and final CRLF exactly as Mail::DKIM made it).
#
# Usage: mail_dkim_sign.pl --key KEY.pem --selector S --domain D
#            [--algorithm rsa-sha256] [--method relaxed/relaxed]
#            [--headers from:to:subject] [--identity user@example.com] < message
#   KEY.pem: an RSA private key in PEM (PKCS#1 or PKCS#8, unencrypted).
#   --headers: exact h= list (names in order, repeats allowed for
#              over-signing); without it Mail::DKIM's default choice is used.
#   The message is read as raw bytes (CRLF line endings expected).
#
# Exit status: 0 signed; 2 bad usage or the signer refused (message on stderr).
use strict;
use warnings;

use Crypt::OpenSSL::RSA;
use Getopt::Long qw(GetOptions);
use Mail::DKIM;
use Mail::DKIM::PrivateKey;
use Mail::DKIM::Signature;
use Mail::DKIM::Signer;

my %opt = ( algorithm => 'rsa-sha256', method => 'relaxed/relaxed' );
GetOptions( \%opt, 'key=s', 'selector=s', 'domain=s', 'algorithm=s', 'method=s', 'headers=s',
    'identity=s' )
  or exit 2;
for my $required (qw(key selector domain)) {
    if ( !defined $opt{$required} ) {
        print STDERR "missing --$required\n";
        exit 2;
    }
}

my $result = eval {
    if ( !Mail::DKIM::Signature->get_algorithm_class( $opt{algorithm} ) ) {
        die "unsupported algorithm $opt{algorithm} in Mail::DKIM $Mail::DKIM::VERSION\n";
    }
    open my $key_fh, '<', $opt{key} or die "cannot read $opt{key}: $!\n";
    my $pem = do { local $/; <$key_fh> };
    close $key_fh;
    my $rsa = Crypt::OpenSSL::RSA->new_private_key($pem);
    my $key = Mail::DKIM::PrivateKey->load( Cork => $rsa );

    my %common = (
        Algorithm => $opt{algorithm},
        Method    => $opt{method},
        Domain    => $opt{domain},
        Selector  => $opt{selector},
        Key       => $key,
        ( defined $opt{identity} ? ( Identity => $opt{identity} ) : () ),
    );
    my $signer;
    if ( defined $opt{headers} ) {
        # a policy that adds one signature with exactly the h= list given
        my $policy = sub {
            my ($dkim) = @_;
            $dkim->add_signature(
                Mail::DKIM::Signature->new( %common, Headers => $opt{headers} ) );
            return;
        };
        $signer = Mail::DKIM::Signer->new( %common, Policy => $policy );
    }
    else {
        $signer = Mail::DKIM::Signer->new(%common);
    }

    binmode STDIN;
    my $message = do { local $/; <STDIN> };
    $message = '' unless defined $message;
    $signer->PRINT($message);
    $signer->CLOSE;
    my $signature = $signer->signature
      or die 'Mail::DKIM made no signature (result: ' . ( $signer->result // '' ) . ")\n";
    $signature->as_string;
};
if ( !defined $result ) {
    my $err = $@ || "unknown error\n";
    print STDERR $err;
    exit 2;
}
binmode STDOUT;
print $result, "\015\012";
exit 0;
