# Names default to the code's (podinsight_dagster/settings.py); change both together
# (the PODINSIGHT_* variables of the tasks are set from these).

variable "region" {
  description = "AWS region (AWS_REGION)"
  type        = string
  default     = "us-east-1"
}

variable "raw_bucket" {
  description = "S3 bucket of raw audio and meta.json (PODINSIGHT_RAW_BUCKET)"
  type        = string
  default     = "pod-insights-raw"
}

variable "stage_bucket" {
  description = "S3 bucket of transcripts, segments, subtitles and KPIs (PODINSIGHT_STAGE_BUCKET)"
  type        = string
  default     = "pod-insights-stage"
}

variable "manifest_bucket" {
  description = "S3 bucket of the daily manifests (PODINSIGHT_MANIFEST_BUCKET)"
  type        = string
  default     = "pod-insights-manifests"
}

variable "archive_bucket" {
  description = "S3 bucket of the Parquet roll-up archive_rollup writes, run-book's ALL-IN (PODINSIGHT_ARCHIVE_BUCKET)"
  type        = string
  default     = "pod-insights-all-in"
}

variable "status_table" {
  description = "DynamoDB table of episode states, feeds, spend and the freeze (PODINSIGHT_STATUS_TABLE)"
  type        = string
  default     = "podinsights-status"
}

variable "metrics_namespace" {
  description = "CloudWatch namespace of the run-book metrics (PODINSIGHT_METRICS_NAMESPACE)"
  type        = string
  default     = "PodInsight"
}

variable "gpu_compute_environment" {
  description = "Batch GPU compute environment the cost freeze disables (PODINSIGHT_GPU_COMPUTE_ENV)"
  type        = string
  default     = "gpu_spot"
}

variable "fetch_compute_environment" {
  description = "Batch Fargate Spot compute environment of the fetch phase"
  type        = string
  default     = "fargate_spot"
}

variable "fetch_job_queue" {
  description = "Batch job queue of the fetch phase"
  type        = string
  default     = "fetch"
}

variable "gpu_job_queue" {
  description = "Batch job queue of the GPU transcription phase"
  type        = string
  default     = "transcribe"
}

variable "fetch_job_definition" {
  description = "Batch job definition of the fetch phase (run-book step 1.4)"
  type        = string
  default     = "fetch"
}

variable "gpu_job_definition" {
  description = "Batch job definition of the GPU phase (run-book step 2.3)"
  type        = string
  default     = "whisper-base"
}

variable "cluster_name" {
  description = "ECS cluster of the Dagster runs (ECS run launcher)"
  type        = string
  default     = "podinsight"
}

variable "fetch_image" {
  description = "Image of the fetch phase and the Dagster code location (docker/Dockerfile.cpu)"
  type        = string
  default     = "podcast-ingestor:latest"
}

variable "gpu_image" {
  description = "Image of the GPU worker (docker/Dockerfile.gpu)"
  type        = string
  default     = "podcast-whisper:latest"
}

variable "gpu_instance_types" {
  description = "Instance types of the GPU compute environment (run-book §4.1)"
  type        = list(string)
  default     = ["g5.xlarge"]
}

variable "gpu_allocation_strategy" {
  description = "Spot allocation strategy of the GPU compute environment (run-book §8.1: switch on a Spot shortage)"
  type        = string
  default     = "SPOT_PRICE_CAPACITY_OPTIMIZED"
  validation {
    condition     = contains(["SPOT_CAPACITY_OPTIMIZED", "SPOT_PRICE_CAPACITY_OPTIMIZED", "BEST_FIT_PROGRESSIVE", "BEST_FIT"], var.gpu_allocation_strategy)
    error_message = "One of SPOT_CAPACITY_OPTIMIZED, SPOT_PRICE_CAPACITY_OPTIMIZED, BEST_FIT_PROGRESSIVE, BEST_FIT."
  }
}

variable "gpu_job_timeout_s" {
  description = "Longest attempt of one whisper-base job (a batch of episodes)"
  type        = number
  default     = 14400
}

variable "cost_ceiling_usd" {
  description = "GPUCostToday ceiling: the alarm fires and the Lambda disables the GPU compute environment (PODINSIGHT_COST_CEILING_USD)"
  type        = number
  default     = 40
}

variable "alarm_email" {
  description = "Also mail the cost alarm here (empty: no e-mail subscription)"
  type        = string
  default     = ""
}

variable "lambda_zip" {
  description = "The freeze Lambda's package, built by `python3 iac/lambda/build.py` (stdlib only)"
  type        = string
  default     = "build/freeze_gpu.zip"
}

variable "vpc_cidr" {
  description = "CIDR of the VPC the Batch jobs run in"
  type        = string
  default     = "10.42.0.0/16"
}

variable "availability_zones" {
  description = "Zones of the subnets (one public and one private subnet each)"
  type        = list(string)
  default     = ["us-east-1a", "us-east-1b"]
}

variable "log_retention_days" {
  description = "Retention of the job and Lambda logs"
  type        = number
  default     = 365
}

variable "table_deletion_protection" {
  description = "Refuse to delete the status table (the spend ledger lives there)"
  type        = bool
  default     = true
}
