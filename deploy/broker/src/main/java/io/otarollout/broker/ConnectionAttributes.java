package io.otarollout.broker;

import com.hivemq.extension.sdk.api.client.parameter.ConnectionAttributeStore;
import java.nio.charset.StandardCharsets;
import java.util.Optional;

/**
 * What the extension remembers about one connection, in HiveMQ's per-connection attribute
 * store. Per connection rather than per client id, so when a device reconnects with the same
 * id (session take-over) the old connection's disconnect still reads its own data.
 * The authenticator writes the device id; the initializer writes the kind once it counted
 * and indexed the connection, so a disconnect undoes exactly what the initializer did, and
 * a token naming the connection for {@link OnlineAnnouncements}.
 */
final class ConnectionAttributes {
    private static final String DEVICE_ID = "ota.device_id";
    private static final String KIND_KEY = "ota.kind";
    private static final String TOKEN = "ota.connection";

    private ConnectionAttributes() {}

    static void rememberDevice(ConnectionAttributeStore store, String deviceId) {
        store.putAsString(DEVICE_ID, deviceId);
    }

    static Optional<String> deviceId(ConnectionAttributeStore store) {
        return store.getAsString(DEVICE_ID);
    }

    static void rememberToken(ConnectionAttributeStore store, String token) {
        store.putAsString(TOKEN, token);
    }

    static Optional<String> token(ConnectionAttributeStore store) {
        return store.getAsString(TOKEN);
    }

    static void markInitialized(ConnectionAttributeStore store, BrokerMetrics.Kind kind) {
        store.putAsString(KIND_KEY, kind.name());
    }

    /** The kind the initializer marked, removed so a second callback for one connection
     * finds nothing (the remove is the store's, so two callers cannot both take it). */
    static Optional<BrokerMetrics.Kind> takeInitializedKind(ConnectionAttributeStore store) {
        return store.remove(KIND_KEY)
                .map(bytes -> StandardCharsets.UTF_8.decode(bytes.duplicate()).toString())
                .map(BrokerMetrics.Kind::valueOf);
    }
}
