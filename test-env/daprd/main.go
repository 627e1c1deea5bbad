// Command daprd is Dapr's sidecar runtime (github.com/dapr/dapr/cmd/daprd/app) with only the
// components this project needs registered: the NATS JetStream state store ("state.jetstream",
// what the operator's Components use), the NATS JetStream pub/sub ("pubsub.jetstream"), and the
// two local secret stores of self-hosted Dapr ("secretstores.local.file", "secretstores.local.env"),
// which `apply` reads as daprd does.
//
// Dapr's own cmd/daprd registers its components from files built with the `allcomponents` or
// `stablecomponents` tag; without either, a file of that package panics at start. test-env/setup.sh
// builds this program with a `-overlay` that leaves that one file out, and no tag, so none of
// Dapr's other components (and none of the cloud SDKs they pull in) are compiled.
package main

import (
	pubsubjetstream "github.com/dapr/components-contrib/pubsub/jetstream"
	secretenv "github.com/dapr/components-contrib/secretstores/local/env"
	secretfile "github.com/dapr/components-contrib/secretstores/local/file"
	statejetstream "github.com/dapr/components-contrib/state/jetstream"
	"github.com/dapr/dapr/cmd/daprd/app"
	pubsubLoader "github.com/dapr/dapr/pkg/components/pubsub"
	secretstoresLoader "github.com/dapr/dapr/pkg/components/secretstores"
	stateLoader "github.com/dapr/dapr/pkg/components/state"
)

func init() {
	stateLoader.DefaultRegistry.RegisterComponent(statejetstream.NewJetstreamStateStore, "jetstream")
	pubsubLoader.DefaultRegistry.RegisterComponent(pubsubjetstream.NewJetStream, "jetstream")
	secretstoresLoader.DefaultRegistry.RegisterComponent(secretfile.NewLocalSecretStore, "local.file")
	secretstoresLoader.DefaultRegistry.RegisterComponent(secretenv.NewEnvSecretStore, "local.env")
}

func main() {
	app.Run()
}
