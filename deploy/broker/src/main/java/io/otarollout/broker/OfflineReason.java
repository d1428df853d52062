package io.otarollout.broker;

import com.hivemq.extension.sdk.api.packets.general.DisconnectedReasonCode;
import java.util.Locale;
import java.util.Optional;

/**
 * The {@code reason} of an offline presence event, from how the connection ended. Pure.
 * Empty means publish nothing: a take-over is the same device connecting again, whose new
 * connection announces itself; an "offline" for the old one could arrive after that.
 */
final class OfflineReason {
    enum Ending { CLIENT_DISCONNECT, CONNECTION_LOST, SERVER_DISCONNECT, OTHER }

    private OfflineReason() {}

    static Optional<String> of(Ending ending, Optional<DisconnectedReasonCode> code) {
        if (code.isPresent()) {
            switch (code.get()) {
                case SESSION_TAKEN_OVER:
                    return Optional.empty();
                case ADMINISTRATIVE_ACTION:
                    return Optional.of("kicked");
                case KEEP_ALIVE_TIMEOUT:
                    return Optional.of("keepalive_timeout");
                case SERVER_SHUTTING_DOWN:
                    return Optional.of("shutdown");
                default:
                    break;
            }
        }
        return switch (ending) {
            case CLIENT_DISCONNECT -> Optional.of("graceful");
            case CONNECTION_LOST -> Optional.of("connection_lost");
            case SERVER_DISCONNECT -> Optional.of(code
                    .map(c -> c.name().toLowerCase(Locale.ROOT)).orElse("server_disconnect"));
            case OTHER -> Optional.of("disconnected");
        };
    }
}
