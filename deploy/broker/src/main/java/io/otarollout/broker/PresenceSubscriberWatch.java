package io.otarollout.broker;

import com.hivemq.extension.sdk.api.interceptor.suback.SubackOutboundInterceptor;
import com.hivemq.extension.sdk.api.interceptor.suback.parameter.SubackOutboundInput;
import com.hivemq.extension.sdk.api.interceptor.suback.parameter.SubackOutboundOutput;
import com.hivemq.extension.sdk.api.interceptor.subscribe.SubscribeInboundInterceptor;
import com.hivemq.extension.sdk.api.interceptor.subscribe.parameter.SubscribeInboundInput;
import com.hivemq.extension.sdk.api.interceptor.subscribe.parameter.SubscribeInboundOutput;
import com.hivemq.extension.sdk.api.interceptor.unsubscribe.UnsubscribeInboundInterceptor;
import com.hivemq.extension.sdk.api.interceptor.unsubscribe.parameter.UnsubscribeInboundInput;
import com.hivemq.extension.sdk.api.interceptor.unsubscribe.parameter.UnsubscribeInboundOutput;
import com.hivemq.extension.sdk.api.packets.subscribe.SubackReasonCode;
import com.hivemq.extension.sdk.api.packets.subscribe.Subscription;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

/**
 * One platform connection's presence subscriptions, told to {@link Presence}. The
 * connection counts as a subscriber from the SUBACK granting a filter that covers every
 * presence topic ({@link PresenceFilters}): HiveMQ sends the SUBACK once the subscription
 * is in its topic tree, so a release then reaches it (at the SUBSCRIBE it would not yet).
 * It stops counting at the UNSUBSCRIBE of such a filter, before it takes effect, and when
 * the connection ends ({@link PresenceListener}). One instance per connection.
 */
final class PresenceSubscriberWatch
        implements SubscribeInboundInterceptor, SubackOutboundInterceptor, UnsubscribeInboundInterceptor {
    private static final Set<SubackReasonCode> GRANTED = EnumSet.of(
            SubackReasonCode.GRANTED_QOS_0, SubackReasonCode.GRANTED_QOS_1, SubackReasonCode.GRANTED_QOS_2);

    private final Presence presence;
    private final String connection;
    /** Per SUBSCRIBE packet id: its filters covering presence, by position in the packet. */
    private final Map<Integer, Map<Integer, String>> awaitingSuback = new ConcurrentHashMap<>();
    private final Set<String> coveringFilters = ConcurrentHashMap.newKeySet();

    PresenceSubscriberWatch(Presence presence, String connection) {
        this.presence = presence;
        this.connection = connection;
    }

    @Override
    public void onInboundSubscribe(SubscribeInboundInput input, SubscribeInboundOutput output) {
        List<Subscription> subscriptions = input.getSubscribePacket().getSubscriptions();
        Map<Integer, String> covering = new HashMap<>();
        for (int i = 0; i < subscriptions.size(); i++) {
            String filter = subscriptions.get(i).getTopicFilter();
            if (PresenceFilters.coversAllPresence(filter)) {
                covering.put(i, filter);
            }
        }
        if (!covering.isEmpty()) {
            awaitingSuback.put(input.getSubscribePacket().getPacketId(), covering);
        }
    }

    @Override
    public void onOutboundSuback(SubackOutboundInput input, SubackOutboundOutput output) {
        Map<Integer, String> covering = awaitingSuback.remove(input.getSubackPacket().getPacketIdentifier());
        if (covering == null) {
            return;
        }
        List<SubackReasonCode> codes = input.getSubackPacket().getReasonCodes();
        covering.forEach((position, filter) -> {
            if (position < codes.size() && GRANTED.contains(codes.get(position))) {
                coveringFilters.add(filter);
            }
        });
        if (!coveringFilters.isEmpty()) {
            presence.subscriberAdded(connection);
        }
    }

    @Override
    public void onInboundUnsubscribe(UnsubscribeInboundInput input, UnsubscribeInboundOutput output) {
        coveringFilters.removeAll(input.getUnsubscribePacket().getTopicFilters());
        if (coveringFilters.isEmpty()) {
            presence.subscriberRemoved(connection);
        }
    }
}
