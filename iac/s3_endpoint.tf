# Gateway VPC endpoint for S3 on the private route table: audio and transcripts go to S3
# without the NAT gateway's per-GB charge. Its policy is the default (full access): image
# layers pulled from ECR also come from S3 through it, and the task role's policy (iam.tf)
# is what limits the jobs to the four buckets.
resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.main.id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.private.id]
  tags              = { Name = "podinsight-s3" }
}
