package io.otarollout.broker;

/**
 * Which topic filters make a client a presence subscriber: those that match every
 * device's presence topic ({@code $ota/presence/+}, {@code $ota/presence/#}, {@code $ota/#},
 * ...), plain or as a shared subscription ({@code $share/<group>/<filter>}). A filter for one
 * device's presence does not count: it would not receive the other devices' events. Pure.
 */
final class PresenceFilters {
    private static final String SHARE_PREFIX = "$share/";

    private PresenceFilters() {}

    static boolean coversAllPresence(String filter) {
        String plain = withoutShareGroup(filter);
        // A filter matching two different device ids has a wildcard at the device's level.
        return matches(plain, Topics.presence("a")) && matches(plain, Topics.presence("b"));
    }

    private static String withoutShareGroup(String filter) {
        if (!filter.startsWith(SHARE_PREFIX)) {
            return filter;
        }
        int groupEnd = filter.indexOf('/', SHARE_PREFIX.length());
        return groupEnd < 0 ? "" : filter.substring(groupEnd + 1);
    }

    /** MQTT matching; a wildcard in the first level matches no '$' topic (MQTT 4.7.2). */
    static boolean matches(String filter, String topic) {
        String[] want = filter.split("/", -1);
        String[] have = topic.split("/", -1);
        for (int i = 0; i < want.length; i++) {
            String level = want[i];
            boolean wildcard = "#".equals(level) || "+".equals(level);
            if (i == 0 && wildcard && topic.startsWith("$")) {
                return false;
            }
            if ("#".equals(level)) {
                return i == want.length - 1;
            }
            if (i >= have.length || !("+".equals(level) || level.equals(have[i]))) {
                return false;
            }
        }
        return want.length == have.length;
    }
}
