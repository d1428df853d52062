package io.otarollout.broker;

import com.hivemq.extension.sdk.api.client.ClientContext;
import com.hivemq.extension.sdk.api.client.parameter.ConnectionAttributeStore;
import com.hivemq.extension.sdk.api.client.parameter.InitializerInput;
import com.hivemq.extension.sdk.api.packets.general.Qos;
import com.hivemq.extension.sdk.api.services.Services;
import com.hivemq.extension.sdk.api.services.builder.Builders;
import com.hivemq.extension.sdk.api.services.intializer.ClientInitializer;
import com.hivemq.extension.sdk.api.services.subscription.TopicSubscription;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.stream.Collectors;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Runs for every accepted connection. A device is subscribed to its downlink topics here
 * (IoTDA devices never SUBSCRIBE), which loses no message published right after CONNACK,
 * unlike onAuthenticationSuccessful (DESIGN.md); its online presence follows once the
 * subscriptions exist. The platform account's connections get the kick interceptor and
 * a {@link PresenceSubscriberWatch}.
 */
final class DeviceInitializer implements ClientInitializer {
    private static final Logger LOG = LoggerFactory.getLogger(DeviceInitializer.class);

    private final BrokerMetrics metrics;
    private final DeviceIndex index;
    private final Presence presence;
    private final KickInterceptor kick;
    private final OnlineAnnouncements announcements;

    DeviceInitializer(BrokerMetrics metrics, DeviceIndex index, Presence presence, KickInterceptor kick,
            OnlineAnnouncements announcements) {
        this.metrics = metrics;
        this.index = index;
        this.presence = presence;
        this.kick = kick;
        this.announcements = announcements;
    }

    @Override
    public void initialize(InitializerInput input, ClientContext context) {
        ConnectionAttributeStore store = input.getConnectionInformation().getConnectionAttributeStore();
        String clientId = input.getClientInformation().getClientId();
        Optional<String> deviceId = ConnectionAttributes.deviceId(store);
        if (deviceId.isEmpty()) {
            // The authenticator lets in nothing but devices and the platform account.
            context.addPublishInboundInterceptor(kick);
            String connection = OnlineAnnouncements.newToken();
            ConnectionAttributes.rememberToken(store, connection);
            PresenceSubscriberWatch watch = new PresenceSubscriberWatch(presence, connection);
            context.addSubscribeInboundInterceptor(watch);
            context.addSubackOutboundInterceptor(watch);
            context.addUnsubscribeInboundInterceptor(watch);
            ConnectionAttributes.markInitialized(store, BrokerMetrics.Kind.PLATFORM);
            metrics.connected(BrokerMetrics.Kind.PLATFORM);
            return;
        }
        String device = deviceId.get();
        // Registered first: once the kind is marked, a disconnect may already wait for it.
        String token = OnlineAnnouncements.newToken();
        CompletableFuture<Void> announced = new CompletableFuture<>();
        announcements.started(token, announced);
        ConnectionAttributes.rememberToken(store, token);
        index.add(device, clientId);
        ConnectionAttributes.markInitialized(store, BrokerMetrics.Kind.DEVICE);
        metrics.connected(BrokerMetrics.Kind.DEVICE);
        Set<TopicSubscription> downlinks = Topics.serverSideSubscriptions(device).stream()
                .map(topic -> Builders.topicSubscription().topicFilter(topic).qos(Qos.AT_LEAST_ONCE).build())
                .collect(Collectors.toSet());
        Services.subscriptionStore()
                .addSubscriptions(clientId, downlinks)
                .handle((ok, error) -> error)
                .thenCompose(error -> {
                    if (error == null) {
                        return presence.publish(new PresenceEvent(
                                device, clientId, true, System.currentTimeMillis(), "connect"));
                    }
                    // A device without its downlink would look online and never hear a command:
                    // drop it, so it reconnects and gets another try.
                    LOG.warn("downlink subscription of client_id={} failed ({}); disconnecting it",
                            clientId, error.toString());
                    return Services.clientService().disconnectClient(clientId).handle((done, failed) -> {
                        if (failed != null) {
                            LOG.warn("could not disconnect client_id={}: {}", clientId, failed.toString());
                        }
                        return null;
                    });
                })
                .whenComplete((done, failed) -> announced.complete(null));
    }
}
