# Sytest homeserver factory for Hongyan: `run-tests.pl -I Hongyan -d DIR` where DIR
# holds the hongyan binary. Modelled on Sytest's own Dendrite factory.
use strict;
use warnings;

require SyTest::Homeserver::Hongyan;

package SyTest::HomeserverFactory::Hongyan;
use base qw( SyTest::HomeserverFactory );

sub _init
{
   my $self = shift;
   $self->{args} = { bindir => "../hongyan/bin" };
   $self->SUPER::_init( @_ );
}

sub implementation_name { return "hongyan"; }

sub get_options
{
   my $self = shift;
   return (
      'd|hongyan-binary-directory=s' => \$self->{args}{bindir},
      $self->SUPER::get_options(),
   );
}

sub print_usage
{
   print STDERR "   -d, --hongyan-binary-directory DIR   - directory holding the hongyan binary\n";
}

sub create_server
{
   my $self = shift;
   my %params = ( @_, %{ $self->{args} } );
   return SyTest::Homeserver::Hongyan->new( %params );
}

1;
