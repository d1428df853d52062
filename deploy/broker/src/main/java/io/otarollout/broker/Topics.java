package io.otarollout.broker;

import java.util.List;
import java.util.Optional;

/**
 * Every topic and topic filter the extension uses, and who may use which. Pure; turned into
 * HiveMQ permissions by {@link Permissions}.
 */
final class Topics {
    static final String KICK_PREFIX = "$ota/kick/";
    static final String PRESENCE_PREFIX = "$ota/presence/";

    enum Activity { PUBLISH, SUBSCRIBE, ALL }

    record Grant(String filter, Activity activity) {}

    private Topics() {}

    private static String device(String deviceId) {
        return "$oc/devices/" + deviceId + "/sys/";
    }

    /** A device sends its own reports and reads only its own system topics (DENY otherwise). */
    static List<Grant> deviceGrants(String deviceId) {
        return List.of(
                new Grant(device(deviceId) + "+/up", Activity.PUBLISH),
                new Grant(device(deviceId) + "properties/report", Activity.PUBLISH),
                new Grant(device(deviceId) + "#", Activity.SUBSCRIBE));
    }

    /** '#' matches no '$' topic, so the platform's '$' trees are granted by name. */
    static List<Grant> platformGrants() {
        return List.of(
                new Grant("#", Activity.ALL),
                new Grant("$oc/#", Activity.ALL),
                new Grant("$ota/#", Activity.ALL));
    }

    /** The downlink topics every device is subscribed to at connect (it never SUBSCRIBEs). */
    static List<String> serverSideSubscriptions(String deviceId) {
        return List.of(device(deviceId) + "events/down", device(deviceId) + "messages/down");
    }

    static String presence(String deviceId) {
        return PRESENCE_PREFIX + deviceId;
    }

    /** The device named by a kick topic {@code $ota/kick/{device_id}}, if it is one. */
    static Optional<String> kickedDevice(String topic) {
        if (!topic.startsWith(KICK_PREFIX)) {
            return Optional.empty();
        }
        String deviceId = topic.substring(KICK_PREFIX.length());
        return ClientId.isUsableDeviceId(deviceId) ? Optional.of(deviceId) : Optional.empty();
    }
}
