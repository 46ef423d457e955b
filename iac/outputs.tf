output "buckets" {
  description = "The four buckets (PODINSIGHT_RAW_BUCKET, _STAGE_BUCKET, _MANIFEST_BUCKET, _ARCHIVE_BUCKET)"
  value       = { for k, b in aws_s3_bucket.this : k => b.bucket }
}

output "status_table" {
  description = "The status table (PODINSIGHT_STATUS_TABLE)"
  value       = aws_dynamodb_table.status.name
}

output "task_role_arn" {
  description = "The role the code runs as"
  value       = aws_iam_role.task.arn
}

output "app_policy_arn" {
  description = "The least-privilege policy of the code's calls"
  value       = aws_iam_policy.app.arn
}

output "gpu_compute_environment_arn" {
  description = "What the cost freeze disables (PODINSIGHT_GPU_COMPUTE_ENV is its name)"
  value       = aws_batch_compute_environment.gpu_spot.arn
}

output "job_queues" {
  description = "Batch job queues: fetch (Fargate Spot) and transcribe (GPU Spot)"
  value       = { fetch = aws_batch_job_queue.fetch.arn, transcribe = aws_batch_job_queue.transcribe.arn }
}

output "ecs_cluster" {
  description = "ECS cluster of the Dagster runs"
  value       = aws_ecs_cluster.main.name
}

output "cost_alarm_topic_arn" {
  description = "SNS topic of the GPUCostToday alarm"
  value       = aws_sns_topic.cost_alarm.arn
}

output "dashboard" {
  description = "CloudWatch dashboard name"
  value       = aws_cloudwatch_dashboard.main.dashboard_name
}
