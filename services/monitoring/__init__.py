"""Monitoring and alerts from inside: json_exporter, Prometheus, Grafana, the blackbox and node
exporters and Alertmanager, with their rendering and templates."""
