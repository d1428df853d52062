package io.otarollout.broker;

import java.net.URI;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;

/**
 * Every setting of the broker, read once at start from OTA_BROKER_* variables (plus the
 * platform account, OTA_MQTT_PLATFORM_USER/_PASSWORD, shared with the rest of the stack).
 * A port of 0 switches that listener off. See docs/broker.md for the table.
 */
public record BrokerConfig(
        Path stateDir,
        String deviceHost,
        int tlsPort,
        int plainPort,
        String platformHost,
        int platformPort,
        boolean platformTls,
        String metricsHost,
        int metricsPort,
        Path tlsKeystore,
        String tlsKeystorePassword,
        AuthMode authMode,
        URI authUrl,
        String authKey,
        Duration authTimeout,
        String redisUrl,
        String credentialPrefix,
        String revocationChannel,
        String deviceCaKey,
        Duration deviceCaRefresh,
        CredentialKeys credentialKeys,
        boolean devCredentialKeys,
        String platformUser,
        String platformPassword,
        int maxPacketBytes,
        int receiveMaximum,
        int inflightWindow,
        int maxQueuedMessages,
        int sessionExpiryMaxSeconds,
        int maxConnections,
        int connectRatePerSecond,
        int presenceHoldMax) {

    /** How devices are authenticated: the control plane over HTTP, or the credential store. */
    public enum AuthMode { HTTP, REDIS }

    public static final String TLS_LISTENER = "device-tls";
    public static final String PLAIN_LISTENER = "device-plain";
    public static final String PLATFORM_LISTENER = "platform";

    public static BrokerConfig fromEnv(Map<String, String> env) {
        EnvReader in = new EnvReader(env);
        int tlsPort = in.port("OTA_BROKER_TLS_PORT", 8883);
        // The platform listener's TLS serves the device listener's keystore: one certificate
        // for the broker's name, one CA for devices and platform services alike.
        boolean platformTls = in.choice("OTA_BROKER_PLATFORM_TLS", "0", "0", "1").equals("1");
        boolean tls = tlsPort != 0 || platformTls;
        AuthMode mode = AuthMode.valueOf(
                in.choice("OTA_BROKER_AUTH_MODE", "http", "http", "redis").toUpperCase(java.util.Locale.ROOT));
        boolean http = mode == AuthMode.HTTP;
        String redisUrl = in.redisUrl("OTA_BROKER_REDIS_URL", !http,
                "the credential store's Redis, e.g. redis://127.0.0.1:6379/1");
        boolean devKeys = in.string(CredentialKeys.NAME, "").isEmpty();
        CredentialKeys keys = http ? null : credentialKeys(in, devKeys);
        BrokerConfig config = new BrokerConfig(
                in.path("OTA_BROKER_STATE_DIR", "the folder for HiveMQ's config and data"),
                in.string("OTA_BROKER_HOST", "127.0.0.1"),
                tlsPort,
                in.port("OTA_BROKER_PORT", 1893),
                in.string("OTA_BROKER_PLATFORM_HOST", "127.0.0.1"),
                in.port("OTA_BROKER_PLATFORM_PORT", 1894),
                platformTls,
                in.string("OTA_BROKER_METRICS_HOST", "127.0.0.1"),
                in.port("OTA_BROKER_METRICS_PORT", 9410),
                tls ? in.path("OTA_BROKER_TLS_KEYSTORE", "PKCS12 keystore of the TLS listeners")
                        : Path.of("."),
                tls ? in.required("OTA_BROKER_TLS_KEYSTORE_PASSWORD", "the keystore's password")
                        : "",
                mode,
                http ? in.httpUrl("OTA_BROKER_AUTH_URL", "the control plane's device authentication")
                        : URI.create("http://unused/"),
                http ? in.required("OTA_BROKER_AUTH_KEY", "bearer key for the authentication call") : "",
                Duration.ofMillis(in.integer("OTA_BROKER_AUTH_TIMEOUT_MS", 2000, 50, 60_000)),
                redisUrl,
                in.string("OTA_BROKER_CREDENTIAL_PREFIX", "ota:sched:cred:"),
                in.string("OTA_BROKER_REVOCATION_CHANNEL", "ota:sched:cred-revoked"),
                in.string("OTA_BROKER_DEVICE_CA_KEY", "ota:sched:device-cas"),
                Duration.ofSeconds(in.integer("OTA_BROKER_DEVICE_CA_REFRESH_S", 10, 1, 3600)),
                keys,
                !http && devKeys,
                in.required("OTA_MQTT_PLATFORM_USER", "the platform services' MQTT account"),
                in.required("OTA_MQTT_PLATFORM_PASSWORD", "the platform account's password"),
                in.integer("OTA_BROKER_MAX_PACKET_BYTES", 1 << 20, 1024, 268_435_460),
                in.integer("OTA_BROKER_RECEIVE_MAXIMUM", 1000, 1, 65_535),
                in.integer("OTA_BROKER_INFLIGHT_WINDOW", 1000, 1, 65_535),
                in.integer("OTA_BROKER_MAX_QUEUED_MESSAGES", 100_000, 1, Integer.MAX_VALUE),
                in.integer("OTA_BROKER_SESSION_EXPIRY_MAX_S", 86_400, 0, Integer.MAX_VALUE),
                in.integer("OTA_BROKER_MAX_CONNECTIONS", -1, -1, Integer.MAX_VALUE),
                in.integer("OTA_BROKER_CONNECT_RATE_PER_S", 0, 0, 1_000_000),
                in.integer("OTA_BROKER_PRESENCE_HOLD_MAX", 1_000_000, 1, 50_000_000));
        config.checkPorts(in);
        in.check();
        return config;
    }

    /** As the scheduler (scheduler/settings.py): unset means the public development key,
     * unless the deployment configured its other secrets (OTA_TOKEN_KEYS). */
    private static CredentialKeys credentialKeys(EnvReader in, boolean unset) {
        if (unset && !in.string("OTA_TOKEN_KEYS", "").isEmpty()) {
            in.problem(CredentialKeys.NAME + " is required once OTA_TOKEN_KEYS is set: "
                    + "kid:base64key with a 32-byte key, the scheduler's");
            return CredentialKeys.parse(CredentialKeys.DEV);
        }
        try {
            return CredentialKeys.parse(unset ? CredentialKeys.DEV : in.string(CredentialKeys.NAME, ""));
        } catch (IllegalArgumentException e) {
            in.problem(e.getMessage());
            return CredentialKeys.parse(CredentialKeys.DEV);
        }
    }

    /** Client certificates on the device TLS listener, whenever the broker can read the
     * registered device CAs from the credential store: always in redis mode, in http mode when
     * OTA_BROKER_REDIS_URL is set (the chain is checked here, the control plane is told the
     * outcome and the names). */
    public boolean deviceCertificates() {
        return tlsPort != 0 && !redisUrl.isEmpty();
    }

    /** The device listener's truststore, written from the registered device CAs. */
    public Path deviceCaTruststore() {
        return stateDir.resolve("device-cas.p12");
    }

    /** Where revocations are read: the credential store, in either mode if set. */
    public boolean listensForRevocations() {
        return !redisUrl.isEmpty();
    }

    private void checkPorts(EnvReader in) {
        if (platformPort == 0) {
            in.problem("OTA_BROKER_PLATFORM_PORT must not be 0: the platform needs its listener");
        }
        if (tlsPort == 0 && plainPort == 0) {
            in.problem("OTA_BROKER_TLS_PORT and OTA_BROKER_PORT are both 0: no device listener");
        }
        Map<Integer, String> seen = new HashMap<>();
        String[][] ports = {
            {"OTA_BROKER_TLS_PORT", Integer.toString(tlsPort)},
            {"OTA_BROKER_PORT", Integer.toString(plainPort)},
            {"OTA_BROKER_PLATFORM_PORT", Integer.toString(platformPort)},
            {"OTA_BROKER_METRICS_PORT", Integer.toString(metricsPort)},
        };
        for (String[] entry : ports) {
            int port = Integer.parseInt(entry[1]);
            String before = seen.putIfAbsent(port, entry[0]);
            if (port != 0 && before != null) {
                in.problem(entry[0] + " and " + before + " are both " + port);
            }
        }
    }

    public Path configFolder() {
        return stateDir.resolve("conf");
    }

    public Path dataFolder() {
        return stateDir.resolve("data");
    }

    public Path extensionsFolder() {
        return stateDir.resolve("extensions");
    }

    /** Never prints secrets: records' default toString would. */
    @Override
    public String toString() {
        return "BrokerConfig[devices tls " + deviceHost + ":" + tlsPort + ", plain " + deviceHost
                + ":" + plainPort + ", platform " + (platformTls ? "tls " : "") + platformHost + ":" + platformPort + ", metrics "
                + metricsHost + ":" + metricsPort + ", auth " + describeAuth() + ", state " + stateDir + "]";
    }

    private String describeAuth() {
        String store = redisUrl.isEmpty() ? "" : redactedRedisUrl();
        return authMode == AuthMode.HTTP
                ? "http " + authUrl + (store.isEmpty() ? "" : ", revocations and device CAs from " + store)
                : "redis " + store + " prefix " + credentialPrefix + " keys " + credentialKeys.keys().keySet();
    }

    /** The Redis URL without a password it may hold. */
    private String redactedRedisUrl() {
        return redisUrl.replaceFirst("//[^@/]*@", "//***@");
    }
}
