# Sytest homeserver driver for Hongyan, modelled on Sytest's Dendrite driver. It
# writes a configuration file and starts `hongyan run` with the client API on plain
# HTTP (Sytest's clients reach it through public_baseurl) and federation on TLS at
# the federation port, which names the server (localhost:PORT), accepting the
# self-signed certificates of Sytest's own federation servers.
use strict;
use warnings;

use Future;

package SyTest::Homeserver::Hongyan;
use base qw( SyTest::Homeserver );

use Carp;

sub _init
{
   my $self = shift;
   my ( $args ) = @_;

   $self->{bindir} = delete $args->{bindir};
   defined $self->{bindir} or croak "Need a bindir";
   $self->{paths} = {};

   $self->SUPER::_init( $args );

   my $idx = $self->{hs_index};
   $self->{ports} = {
      client     => main::alloc_port( "hongyan[$idx].client" ),
      federation => main::alloc_port( "hongyan[$idx].federation" ),
   };
}

sub server_name
{
   my $self = shift;
   return $self->{bind_host} . ":" . $self->{ports}{federation};
}

sub federation_host { my $self = shift; return $self->{bind_host}; }
sub federation_port { my $self = shift; return $self->{ports}{federation}; }
sub secure_port     { my $self = shift; return $self->{ports}{federation}; }
sub unsecure_port   { my $self = shift; return $self->{ports}{client}; }

sub public_baseurl
{
   my $self = shift;
   return "http://$self->{bind_host}:" . $self->{ports}{client};
}

sub start
{
   my $self = shift;
   my $hs_dir = $self->{hs_dir};
   my $idx = $self->{hs_index};

   my $config = {
      server_name     => $self->server_name,
      data_dir        => "$hs_dir/data",
      listen          => $self->{bind_host} . ":" . $self->{ports}{client},
      public_base_url => $self->public_baseurl,
      registration    => {
         enabled       => JSON::true,
         shared_secret => "reg_secret",
         guests        => JSON::true,
      },
      rate_limit => { enabled => JSON::false },
      federation => {
         listen               => $self->{bind_host} . ":" . $self->{ports}{federation},
         insecure_skip_verify => JSON::true,
         retry_max            => "5s",
      },
      # Sytest's own web server, which URL previews fetch from, is on loopback.
      media      => { preview_allow => "127.0.0.0/8,::1/128" },
      native     => { listen => "off" },
      # Several homeservers run at once: none starts the embedded TURN server
      # (fixed port 3478); /voip/turnServer hands out credentials for a named one.
      turn       => { shared_secret => "turn_secret", uris => [ "turn:127.0.0.1:3478?transport=udp" ],
                      embedded => { enabled => JSON::false } },
      # Sytest's push gateway listens on loopback, with a self-signed certificate.
      push       => { gateway_allow_cidrs => "127.0.0.0/8,::1/128", gateway_insecure_skip_verify => JSON::true },
      log        => { level => "info" },
      # Sytest writes the application services' registration files itself;
      # their URLs are its own HTTPS server, with a certificate of its own CA.
      app_service_config_files         => $self->{app_service_config_files} // [],
      app_service_insecure_skip_verify => JSON::true,
   };
   $self->{paths}{config} = $self->write_yaml_file( "hongyan.yaml" => $config );

   my @command = ( $self->{bindir} . '/hongyan', 'run', '--config', $self->{paths}{config} );
   $self->{output}->diag( "Starting Hongyan with: @command" );

   return $self->_start_process_and_await_connectable(
      setup        => [],
      command      => [ @command ],
      connect_host => $self->{bind_host},
      connect_port => $self->{ports}{client},
      name         => "hongyan-$idx",
   )->else( sub {
      die "Unable to start hongyan: $_[0]\n";
   });
}

1;
