"""The public TLS edge: Pingoo on 443 for the tracker names, nginx+certbot for Grafana (3443) and
port 80. Components, rendering and templates of the edge live in this folder."""
