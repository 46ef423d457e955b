# Phase 2 (run-book §4.1, steps 2.2-2.3): whisper-base on g5.xlarge Spot, 40 vCPUs = 10 GPUs.
# The cost freeze (cw_alarm.tf's Lambda, or BatchComputeFreezer in the code) sets this
# environment DISABLED with desiredvCpus 0; Terraform leaves state and desired vCPUs alone so an
# apply never lifts a freeze (`podrun freeze --lift` does).

resource "aws_batch_compute_environment" "gpu_spot" {
  compute_environment_name = var.gpu_compute_environment
  type                     = "MANAGED"
  state                    = "ENABLED"
  service_role             = aws_iam_role.batch_service.arn

  compute_resources {
    type                = "SPOT"
    allocation_strategy = var.gpu_allocation_strategy
    bid_percentage      = 100
    instance_type       = var.gpu_instance_types
    min_vcpus           = 0
    desired_vcpus       = 0
    max_vcpus           = 40 # 10 GPUs
    subnets             = aws_subnet.private[*].id
    security_group_ids  = [aws_security_group.jobs.id]
    instance_role       = aws_iam_instance_profile.gpu_instance.arn

    ec2_configuration {
      image_type = "ECS_AL2_NVIDIA"
    }
  }

  lifecycle {
    ignore_changes = [state, compute_resources[0].desired_vcpus]
  }

  depends_on = [aws_iam_role_policy_attachment.batch_service]
}

resource "aws_batch_job_queue" "transcribe" {
  name     = var.gpu_job_queue
  state    = "ENABLED"
  priority = 1
  compute_environment_order {
    order               = 1
    compute_environment = aws_batch_compute_environment.gpu_spot.arn
  }
}

resource "aws_batch_job_definition" "whisper_base" {
  name                  = var.gpu_job_definition
  type                  = "container"
  platform_capabilities = ["EC2"]
  propagate_tags        = true

  timeout {
    attempt_duration_seconds = var.gpu_job_timeout_s
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

  container_properties = jsonencode({
    image      = var.gpu_image
    command    = ["python", "-m", "podinsight_dagster.worker"]
    jobRoleArn = aws_iam_role.task.arn
    resourceRequirements = [
      { type = "GPU", value = "1" },
      { type = "VCPU", value = "4" },
      { type = "MEMORY", value = "8192" },
    ]
    environment = concat(local.app_environment, [
      { name = "PODINSIGHT_MODEL", value = "base" },
      { name = "PODINSIGHT_DEVICE", value = "cuda" },
    ])
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        "awslogs-group"         = aws_cloudwatch_log_group.jobs.name
        "awslogs-region"        = var.region
        "awslogs-stream-prefix" = "whisper"
      }
    }
  })
}
