# Run-book §4.4/§6.1: GPUCostToday at the ceiling -> SNS topic -> Lambda that disables the GPU
# compute environment with desiredvCpus 0 (the same call as the code's BatchComputeFreezer).
# The code also freezes by itself when a transcription finds today's cost at the ceiling
# (Budget.check: cost >= ceiling), hence GreaterThanOrEqualToThreshold here too.

resource "aws_cloudwatch_metric_alarm" "gpu_cost_today" {
  alarm_name          = "PodInsight-GPUCostToday"
  alarm_description   = "GPUCostToday reached the ${var.cost_ceiling_usd} USD ceiling: the GPU compute environment is disabled (podrun freeze --lift to resume)"
  namespace           = var.metrics_namespace
  metric_name         = "GPUCostToday"
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 1
  threshold           = var.cost_ceiling_usd
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.cost_alarm.arn]
}

resource "aws_sns_topic" "cost_alarm" {
  name = "podinsight-cost-alarm"
}

# Only CloudWatch alarms of this account may publish.
resource "aws_sns_topic_policy" "cost_alarm" {
  arn = aws_sns_topic.cost_alarm.arn
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "CloudWatchAlarms"
      Effect    = "Allow"
      Principal = { Service = "cloudwatch.amazonaws.com" }
      Action    = "sns:Publish"
      Resource  = aws_sns_topic.cost_alarm.arn
      Condition = { ArnLike = { "aws:SourceArn" = "arn:${local.partition}:cloudwatch:${var.region}:${local.account_id}:alarm:*" } }
    }]
  })
}

resource "aws_sns_topic_subscription" "email" {
  count     = var.alarm_email == "" ? 0 : 1
  topic_arn = aws_sns_topic.cost_alarm.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

resource "aws_sns_topic_subscription" "freeze" {
  topic_arn = aws_sns_topic.cost_alarm.arn
  protocol  = "lambda"
  endpoint  = aws_lambda_function.freeze_gpu.arn
}

resource "aws_lambda_permission" "sns" {
  statement_id  = "AllowCostAlarmTopic"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.freeze_gpu.function_name
  principal     = "sns.amazonaws.com"
  source_arn    = aws_sns_topic.cost_alarm.arn
}

resource "aws_lambda_function" "freeze_gpu" {
  function_name                  = "podinsight-freeze-gpu"
  description                    = "Disable the GPU compute environment (desiredvCpus 0) when GPUCostToday reaches the ceiling"
  filename                       = "${path.module}/${var.lambda_zip}"
  source_code_hash               = filebase64sha256("${path.module}/${var.lambda_zip}")
  handler                        = "freeze_gpu.handler"
  runtime                        = "python3.12"
  timeout                        = 30
  reserved_concurrent_executions = 1
  role                           = aws_iam_role.freeze_gpu.arn

  environment {
    variables = { COMPUTE_ENVIRONMENT = var.gpu_compute_environment }
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [aws_cloudwatch_log_group.freeze_gpu]
}

resource "aws_cloudwatch_log_group" "freeze_gpu" {
  name              = "/aws/lambda/podinsight-freeze-gpu"
  retention_in_days = var.log_retention_days
}

resource "aws_iam_role" "freeze_gpu" {
  name = "podinsight-freeze-gpu"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "lambda.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

# Exactly the freeze call, its logs and its traces.
resource "aws_iam_role_policy" "freeze_gpu" {
  name = "freeze-gpu-compute-environment"
  role = aws_iam_role.freeze_gpu.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Effect   = "Allow"
        Action   = ["batch:UpdateComputeEnvironment"]
        Resource = [aws_batch_compute_environment.gpu_spot.arn]
      },
      {
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:PutLogEvents"]
        Resource = ["${aws_cloudwatch_log_group.freeze_gpu.arn}:*"]
      },
      {
        Effect   = "Allow"
        Action   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
        Resource = ["*"]
      },
    ]
  })
}
