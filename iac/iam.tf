# Roles of the tasks and jobs, and the application's least-privilege policy: exactly the calls
# podinsight_dagster makes (S3ObjectStore, DynamoCheckpointStore/DynamoSpendLedger,
# CloudWatchMetrics, BatchComputeFreezer) plus submitting/watching the two job kinds and
# reading their logs. The policy's one source is policies/app_policy.json.tftpl;
# appendix/IAM_policy.json is it rendered with the default names (tests/test_iac.py checks).

locals {
  job_log_group = "/aws/batch/podinsight"
  app_policy = templatefile("${path.module}/policies/app_policy.json.tftpl", {
    region                  = var.region
    account_id              = local.account_id
    raw_bucket              = var.raw_bucket
    stage_bucket            = var.stage_bucket
    manifest_bucket         = var.manifest_bucket
    archive_bucket          = var.archive_bucket
    status_table            = var.status_table
    metrics_namespace       = var.metrics_namespace
    gpu_compute_environment = var.gpu_compute_environment
    fetch_job_queue         = var.fetch_job_queue
    gpu_job_queue           = var.gpu_job_queue
    fetch_job_definition    = var.fetch_job_definition
    gpu_job_definition      = var.gpu_job_definition
    log_group               = local.job_log_group
  })
  ecs_tasks_trust = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ecs-tasks.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_policy" "app" {
  name        = "podinsight-app"
  description = "Pod-Insight: the S3, DynamoDB, CloudWatch, Batch and Logs calls the code makes"
  policy      = local.app_policy
}

# The role the code runs as: Dagster runs on ECS, fetch jobs on Fargate Spot, whisper-base on GPU Spot.
resource "aws_iam_role" "task" {
  name               = "podinsight-task"
  assume_role_policy = local.ecs_tasks_trust
}

resource "aws_iam_role_policy_attachment" "task_app" {
  role       = aws_iam_role.task.name
  policy_arn = aws_iam_policy.app.arn
}

# The role ECS/Batch uses to pull images and ship logs (not the code's).
resource "aws_iam_role" "execution" {
  name               = "podinsight-execution"
  assume_role_policy = local.ecs_tasks_trust
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

# AWS Batch's service role (run-book §3.1, §4.1: service_role).
resource "aws_iam_role" "batch_service" {
  name = "podinsight-batch-service"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "batch.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy_attachment" "batch_service" {
  role       = aws_iam_role.batch_service.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSBatchServiceRole"
}

# The GPU instances' role (ECS agent on the ECS GPU AMI).
resource "aws_iam_role" "gpu_instance" {
  name = "podinsight-gpu-instance"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

resource "aws_iam_role_policy_attachment" "gpu_instance" {
  role       = aws_iam_role.gpu_instance.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
}

resource "aws_iam_instance_profile" "gpu_instance" {
  name = "podinsight-gpu-instance"
  role = aws_iam_role.gpu_instance.name
}

resource "aws_cloudwatch_log_group" "jobs" {
  name              = local.job_log_group
  retention_in_days = var.log_retention_days
}
