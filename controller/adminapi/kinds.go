package adminapi

// Object kinds, as the store, the admin API's paths and messages, the audit
// log and the apply record ("kind/name") name them. First those network.yaml
// declares by name:
const (
	KindNetwork        = "network"
	KindResource       = "resource"
	KindGroup          = "group"
	KindUser           = "user"
	KindServiceAccount = "service_account"
	KindPostureProfile = "posture_profile"
)

// The components: connectors are declared under their network, relays only
// enrolled.
const (
	KindConnector = "connector"
	KindRelay     = "relay"
)

// The clients' devices and their sessions.
const (
	KindDevice  = "device"
	KindSession = "session"
)

// Admins and their credentials.
const (
	KindAdmin        = "admin"
	KindAdminToken   = "admin_token"
	KindAdminSession = "admin_session"
)
