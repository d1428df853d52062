package io.otarollout.broker;

import com.hivemq.extension.sdk.api.auth.parameter.TopicPermission;
import com.hivemq.extension.sdk.api.packets.auth.DefaultAuthorizationBehaviour;
import com.hivemq.extension.sdk.api.packets.auth.ModifiableDefaultPermissions;
import com.hivemq.extension.sdk.api.services.builder.Builders;
import java.util.List;

/** Applies {@link Topics.Grant}s as a client's permissions, denying everything else. */
final class Permissions {
    private Permissions() {}

    static void apply(ModifiableDefaultPermissions permissions, List<Topics.Grant> grants) {
        permissions.setDefaultBehaviour(DefaultAuthorizationBehaviour.DENY);
        for (Topics.Grant grant : grants) {
            permissions.add(Builders.topicPermission()
                    .topicFilter(grant.filter())
                    .type(TopicPermission.PermissionType.ALLOW)
                    .activity(activity(grant.activity()))
                    .qos(TopicPermission.Qos.ALL)
                    .retain(TopicPermission.Retain.NOT_RETAINED)
                    .build());
        }
    }

    private static TopicPermission.MqttActivity activity(Topics.Activity activity) {
        return switch (activity) {
            case PUBLISH -> TopicPermission.MqttActivity.PUBLISH;
            case SUBSCRIBE -> TopicPermission.MqttActivity.SUBSCRIBE;
            case ALL -> TopicPermission.MqttActivity.ALL;
        };
    }
}
