module github.com/nimbus-dev/nimbus/examples/lambda-go

go 1.26.0

require github.com/aws/aws-lambda-go v1.55.1
