/*
 * res_regmirror_devstate: DEVICE_STATE(PJSIP/<endpoint>) for realtime users.
 *
 * SPDX-License-Identifier: GPL-2.0-only
 * (An Asterisk module links against Asterisk and carries its licence; the rest of regmirror
 * is MIT.)
 *
 * Why: res_pjsip keeps an endpoint ONLINE/OFFLINE through its endpoint state compositors
 * (res/res_pjsip/pjsip_options.c), which learn AORs and endpoints only by listing every one of
 * them: at load and reload, and for a new AOR with qualify on. With users in the realtime
 * tables that listing is a full read of ps_endpoints per new AOR (more than 15 s at 20,000
 * users, measured on Asterisk 22.10, blocking the node's registrar meanwhile), so a user
 * provisioned after the node started stays UNAVAILABLE with its contact present: hints, BLF and
 * queue member availability never see it.
 *
 * What: follow the contacts instead. Whenever a contact of an AOR without qualify is added or
 * removed (REGISTER, unregister, expiry, pruning) the endpoint it was registered for is set
 * ONLINE while the AOR still has a contact and OFFLINE once it has none. Cost per change: one
 * astdb prefix read. Qualified AORs are left to res_pjsip.
 */

#include "asterisk.h"

#include "asterisk/astobj2.h"
#include "asterisk/config.h"
#include "asterisk/endpoints.h"
#include "asterisk/logger.h"
#include "asterisk/module.h"
#include "asterisk/sorcery.h"
#include "asterisk/strings.h"
#include "asterisk/taskprocessor.h"
#include "asterisk/utils.h"

/* From asterisk/res_pjsip.h, which needs pjproject's headers to compile. */
struct ast_sorcery *ast_sip_get_sorcery(void);
int ast_sip_persistent_endpoint_update_state(const char *endpoint_name,
	enum ast_endpoint_state state);

#define NAME_MAX_LEN 128

struct contact_info {
	char aor[NAME_MAX_LEN];
	char endpoint[NAME_MAX_LEN];
	int qualified;
};

static struct ast_taskprocessor *startup_tps;

/* A contact's id is "<aor>;@<hash>" (res_pjsip/location.c); its endpoint and qualify frequency
 * are ordinary sorcery fields. */
static int contact_info_get(const void *contact, struct contact_info *info)
{
	const char *id = ast_sorcery_object_get_id(contact);
	const char *sep = strstr(id, ";@");
	struct ast_variable *fields, *field;

	if (!sep || sep == id || (size_t) (sep - id) >= sizeof(info->aor)) {
		return -1;
	}
	ast_copy_string(info->aor, id, sep - id + 1);
	info->endpoint[0] = '\0';
	info->qualified = 0;

	fields = ast_sorcery_objectset_create(ast_sip_get_sorcery(), contact);
	for (field = fields; field; field = field->next) {
		if (!strcmp(field->name, "endpoint")) {
			ast_copy_string(info->endpoint, field->value, sizeof(info->endpoint));
		} else if (!strcmp(field->name, "qualify_frequency")) {
			info->qualified = atoi(field->value) > 0;
		}
	}
	ast_variables_destroy(fields);

	if (ast_strlen_zero(info->endpoint)) {
		/* Contacts stored before Asterisk kept the endpoint name: the provisioning convention
		 * here is one endpoint per AOR, of the same name. */
		ast_copy_string(info->endpoint, info->aor, sizeof(info->endpoint));
	}
	return 0;
}

static void endpoint_state_refresh(const struct contact_info *info)
{
	struct ast_sorcery *sorcery = ast_sip_get_sorcery();
	char prefix[NAME_MAX_LEN + 3];
	struct ao2_container *contacts;
	enum ast_endpoint_state state;

	snprintf(prefix, sizeof(prefix), "%s;@", info->aor);
	contacts = ast_sorcery_retrieve_by_prefix(sorcery, "contact", prefix, strlen(prefix));
	state = contacts && ao2_container_count(contacts) ? AST_ENDPOINT_ONLINE : AST_ENDPOINT_OFFLINE;
	ao2_cleanup(contacts);

	if (ast_sip_persistent_endpoint_update_state(info->endpoint, state)) {
		/* Nothing has loaded the endpoint on this node yet (contacts restored at start-up):
		 * loading it creates the state that DEVICE_STATE reads. */
		void *endpoint = ast_sorcery_retrieve_by_id(sorcery, "endpoint", info->endpoint);

		if (!endpoint) {
			return;
		}
		ao2_ref(endpoint, -1);
		ast_sip_persistent_endpoint_update_state(info->endpoint, state);
	}
	ast_debug(3, "Endpoint '%s' (AOR '%s') is now %s\n", info->endpoint, info->aor,
		state == AST_ENDPOINT_ONLINE ? "online" : "offline");
}

/* Sorcery notifies observers on the contact type's own serializer, in order. */
static void contact_changed(const void *contact)
{
	struct contact_info info;

	if (contact_info_get(contact, &info) || info.qualified) {
		return;
	}
	endpoint_state_refresh(&info);
}

static const struct ast_sorcery_observer contact_observer = {
	.created = contact_changed,
	.deleted = contact_changed,
};

static int contact_restored(void *obj, void *arg, int flags)
{
	contact_changed(obj);
	return 0;
}

/* Contacts kept in astdb across a restart: set their endpoints ONLINE, off the load path (one
 * endpoint lookup each). */
static int startup_pass(void *data)
{
	struct ao2_container *contacts;

	contacts = ast_sorcery_retrieve_by_fields(ast_sip_get_sorcery(), "contact",
		AST_RETRIEVE_FLAG_MULTIPLE | AST_RETRIEVE_FLAG_ALL, NULL);
	if (!contacts) {
		return 0;
	}
	ast_verb(3, "regmirror devstate: %d stored contacts\n", ao2_container_count(contacts));
	ao2_callback(contacts, OBJ_NODATA, contact_restored, NULL);
	ao2_ref(contacts, -1);
	return 0;
}

static int unload_module(void)
{
	ast_sorcery_observer_remove(ast_sip_get_sorcery(), "contact", &contact_observer);
	startup_tps = ast_taskprocessor_unreference(startup_tps);
	return 0;
}

static int load_module(void)
{
	if (ast_sorcery_observer_add(ast_sip_get_sorcery(), "contact", &contact_observer)) {
		ast_log(LOG_ERROR, "regmirror devstate: cannot observe PJSIP contacts\n");
		return AST_MODULE_LOAD_DECLINE;
	}
	startup_tps = ast_taskprocessor_get("regmirror_devstate", TPS_REF_DEFAULT);
	if (!startup_tps || ast_taskprocessor_push(startup_tps, startup_pass, NULL)) {
		ast_log(LOG_WARNING, "regmirror devstate: stored contacts stay as res_pjsip left them\n");
	}
	return AST_MODULE_LOAD_SUCCESS;
}

AST_MODULE_INFO(ASTERISK_GPL_KEY, AST_MODFLAG_LOAD_ORDER,
	"regmirror: PJSIP device state for realtime users",
	.support_level = AST_MODULE_SUPPORT_EXTENDED,
	.load = load_module,
	.unload = unload_module,
	.load_pri = AST_MODPRI_APP_DEPEND,
	.requires = "res_pjsip",
);
