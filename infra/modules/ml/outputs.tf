output "sagemaker_role_arn" {
  description = "ARN of the SageMaker execution role."
  value       = aws_iam_role.sagemaker.arn
}

output "glue_role_arn" {
  description = "ARN of the Glue job role."
  value       = aws_iam_role.glue.arn
}

output "glue_job_name" {
  description = "Name of the preprocessing Glue job."
  value       = aws_glue_job.preprocess.name
}
