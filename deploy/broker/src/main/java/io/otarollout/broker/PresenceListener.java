package io.otarollout.broker;

import com.hivemq.extension.sdk.api.client.parameter.ConnectionAttributeStore;
import com.hivemq.extension.sdk.api.events.client.ClientLifecycleEventListener;
import com.hivemq.extension.sdk.api.events.client.parameters.AuthenticationSuccessfulInput;
import com.hivemq.extension.sdk.api.events.client.parameters.ClientInitiatedDisconnectInput;
import com.hivemq.extension.sdk.api.events.client.parameters.ConnectionLostInput;
import com.hivemq.extension.sdk.api.events.client.parameters.ConnectionStartInput;
import com.hivemq.extension.sdk.api.events.client.parameters.DisconnectEventInput;
import com.hivemq.extension.sdk.api.events.client.parameters.ServerInitiatedDisconnectInput;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;

/**
 * The end of a connection: undoes what {@link DeviceInitializer} counted and indexed, and
 * publishes the device's offline presence, after the connection's online event
 * ({@link OnlineAnnouncements}; online is published by the initializer once the device's
 * downlink subscriptions exist). A platform connection's end is told to {@link Presence}
 * (it may have been the presence subscriber). Connections refused at CONNECT were never
 * initialized and are ignored.
 */
final class PresenceListener implements ClientLifecycleEventListener {
    private final BrokerMetrics metrics;
    private final DeviceIndex index;
    private final Presence presence;
    private final OnlineAnnouncements announcements;

    PresenceListener(BrokerMetrics metrics, DeviceIndex index, Presence presence,
            OnlineAnnouncements announcements) {
        this.metrics = metrics;
        this.index = index;
        this.presence = presence;
        this.announcements = announcements;
    }

    @Override
    public void onMqttConnectionStart(ConnectionStartInput input) {}

    @Override
    public void onAuthenticationSuccessful(AuthenticationSuccessfulInput input) {}

    @Override
    public void onClientInitiatedDisconnect(ClientInitiatedDisconnectInput input) {
        ended(input, OfflineReason.Ending.CLIENT_DISCONNECT);
    }

    @Override
    public void onConnectionLost(ConnectionLostInput input) {
        ended(input, OfflineReason.Ending.CONNECTION_LOST);
    }

    @Override
    public void onServerInitiatedDisconnect(ServerInitiatedDisconnectInput input) {
        ended(input, OfflineReason.Ending.SERVER_DISCONNECT);
    }

    @Override
    public void onDisconnect(DisconnectEventInput input) {
        ended(input, OfflineReason.Ending.OTHER);
    }

    private void ended(DisconnectEventInput input, OfflineReason.Ending ending) {
        ConnectionAttributeStore store = input.getConnectionInformation().getConnectionAttributeStore();
        Optional<BrokerMetrics.Kind> kind = ConnectionAttributes.takeInitializedKind(store);
        if (kind.isEmpty()) {
            return;
        }
        metrics.disconnected(kind.get());
        if (kind.get() == BrokerMetrics.Kind.PLATFORM) {
            ConnectionAttributes.token(store).ifPresent(presence::subscriberRemoved);
            return;
        }
        Optional<String> deviceId = ConnectionAttributes.deviceId(store);
        if (kind.get() != BrokerMetrics.Kind.DEVICE || deviceId.isEmpty()) {
            return;
        }
        String clientId = input.getClientInformation().getClientId();
        index.remove(deviceId.get(), clientId);
        long atMs = System.currentTimeMillis();
        CompletableFuture<Void> online = ConnectionAttributes.token(store)
                .map(announcements::ended)
                .orElseGet(() -> CompletableFuture.completedFuture(null));
        OfflineReason.of(ending, input.getReasonCode()).ifPresent(reason -> online.thenRun(() ->
                presence.publish(new PresenceEvent(deviceId.get(), clientId, false, atMs, reason))));
    }
}
