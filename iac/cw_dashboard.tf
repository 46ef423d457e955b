# The run-book §5 dashboard from cw_dashboard.json (a template: ${namespace}, ${region},
# ${cost_alarm_arn}; otherwise plain dashboard-body JSON). Metric names and dimensions are
# those the code emits (fetch/download.py, costs/budget.py); tests/test_iac.py checks them.
resource "aws_cloudwatch_dashboard" "main" {
  dashboard_name = "PodInsight"
  dashboard_body = templatefile("${path.module}/cw_dashboard.json", {
    namespace      = var.metrics_namespace
    region         = var.region
    cost_alarm_arn = aws_cloudwatch_metric_alarm.gpu_cost_today.arn
  })
}
