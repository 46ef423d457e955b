# Phase 1 (run-book §3.1, steps 1.3-1.4): fetch on Fargate Spot, 20 vCPUs = 80 tasks of 0.25 vCPU.

locals {
  # The code's settings, from the same variables (podinsight_dagster/settings.py).
  app_environment = [
    { name = "PODINSIGHT_DEPLOYMENT", value = "aws" },
    { name = "PODINSIGHT_RAW_BUCKET", value = var.raw_bucket },
    { name = "PODINSIGHT_STAGE_BUCKET", value = var.stage_bucket },
    { name = "PODINSIGHT_MANIFEST_BUCKET", value = var.manifest_bucket },
    { name = "PODINSIGHT_ARCHIVE_BUCKET", value = var.archive_bucket },
    { name = "PODINSIGHT_STATUS_TABLE", value = var.status_table },
    { name = "PODINSIGHT_METRICS_NAMESPACE", value = var.metrics_namespace },
    { name = "PODINSIGHT_GPU_COMPUTE_ENV", value = var.gpu_compute_environment },
    { name = "PODINSIGHT_COST_CEILING_USD", value = tostring(var.cost_ceiling_usd) },
    { name = "AWS_REGION", value = var.region },
  ]
  # A Spot reclaim is retried; anything else is the code's own verdict (it retries what is retryable).
  spot_retry = [
    { action = "RETRY", on_status_reason = "Host EC2*" },
    { action = "EXIT", on_reason = "*" },
  ]
}

resource "aws_batch_compute_environment" "fargate_spot" {
  compute_environment_name = var.fetch_compute_environment
  type                     = "MANAGED"
  service_role             = aws_iam_role.batch_service.arn

  compute_resources {
    type               = "FARGATE_SPOT"
    max_vcpus          = 20 # 80 parallel 0.25-vCPU tasks
    subnets            = aws_subnet.private[*].id
    security_group_ids = [aws_security_group.jobs.id]
  }

  depends_on = [aws_iam_role_policy_attachment.batch_service]
}

resource "aws_batch_job_queue" "fetch" {
  name     = var.fetch_job_queue
  state    = "ENABLED"
  priority = 1
  compute_environment_order {
    order               = 1
    compute_environment = aws_batch_compute_environment.fargate_spot.arn
  }
}

resource "aws_batch_job_definition" "fetch" {
  name                  = var.fetch_job_definition
  type                  = "container"
  platform_capabilities = ["FARGATE"]
  propagate_tags        = true

  timeout {
    attempt_duration_seconds = 900
  }

  retry_strategy {
    attempts = 3
    dynamic "evaluate_on_exit" {
      for_each = local.spot_retry
      content {
        action           = evaluate_on_exit.value.action
        on_status_reason = lookup(evaluate_on_exit.value, "on_status_reason", null)
        on_reason        = lookup(evaluate_on_exit.value, "on_reason", null)
      }
    }
  }

  parameters = {
    manifest = "-"
    limit    = "1000"
  }

  container_properties = jsonencode({
    image            = var.fetch_image
    command          = ["podrun", "fetch", "--manifest", "Ref::manifest", "--limit", "Ref::limit"]
    jobRoleArn       = aws_iam_role.task.arn
    executionRoleArn = aws_iam_role.execution.arn
    resourceRequirements = [
      { type = "VCPU", value = "0.25" },
      { type = "MEMORY", value = "512" },
    ]
    environment                  = local.app_environment
    networkConfiguration         = { assignPublicIp = "DISABLED" }
    fargatePlatformConfiguration = { platformVersion = "LATEST" }
    readonlyRootFilesystem       = false # downloads stream to a temp file beside PODINSIGHT_HOME
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        "awslogs-group"         = aws_cloudwatch_log_group.jobs.name
        "awslogs-region"        = var.region
        "awslogs-stream-prefix" = "fetch"
      }
    }
  })
}
