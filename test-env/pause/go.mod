module jetstream-kv-operator/test-env/pause

go 1.26.0
