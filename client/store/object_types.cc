#include "client/store/object_types.h"

#include "absl/strings/str_join.h"

namespace pulsesync {
namespace {

ColumnDef Col(const char* name, ColumnType type, bool required = false,
              const char* default_sql = "") {
  return ColumnDef{name, type, /*system=*/false, required, default_sql};
}

ColumnDef Sys(const char* name, ColumnType type, const char* default_sql = "") {
  return ColumnDef{name, type, /*system=*/true, /*required=*/false, default_sql};
}

ObjectTypeDef Type(const char* object_type, const char* table, std::vector<ColumnDef> cols) {
  ObjectTypeDef def{object_type, table, std::move(cols)};
  def.columns.push_back(Sys("version", ColumnType::kInteger, "0"));
  def.columns.push_back(Sys("updated_at", ColumnType::kTimestamp));
  def.columns.push_back(Sys("deleted", ColumnType::kBoolean, "0"));
  def.columns.push_back(Sys("recovered", ColumnType::kBoolean, "0"));
  def.columns.push_back(Sys("last_origin_id", ColumnType::kText));
  def.columns.push_back(Sys("last_revision_id", ColumnType::kUuid));
  def.columns.push_back(Sys("hlc", ColumnType::kText));
  return def;
}

std::vector<ObjectTypeDef>* BuildCatalog() {
  using T = ColumnType;
  auto* types = new std::vector<ObjectTypeDef>();
  types->push_back(
      Type("team", "teams",
           {Col("id", T::kUuid), Col("name", T::kText, true), Col("created_at", T::kTimestamp)}));
  types->push_back(Type("user", "users",
                        {Col("id", T::kUuid), Col("email", T::kText), Col("display_name", T::kText),
                         Col("created_at", T::kTimestamp)}));
  types->push_back(
      Type("team_member", "team_members",
           {Col("id", T::kUuid), Col("team_id", T::kUuid, true), Col("user_id", T::kUuid, true),
            Col("role", T::kText, false, "'member'"), Col("created_at", T::kTimestamp)}));
  types->push_back(
      Type("project", "projects",
           {Col("id", T::kUuid), Col("team_id", T::kUuid, true), Col("name", T::kText, true),
            Col("description", T::kText), Col("created_at", T::kTimestamp)}));
  types->push_back(Type("task", "tasks",
                        {Col("id", T::kUuid), Col("team_id", T::kUuid, true),
                         Col("project_id", T::kUuid), Col("title", T::kText, true),
                         Col("description", T::kText), Col("status", T::kText, false, "'todo'"),
                         Col("priority", T::kInteger, false, "0"), Col("assignee_id", T::kUuid),
                         Col("due_at", T::kTimestamp), Col("created_at", T::kTimestamp)}));
  return types;
}

}  // namespace

const ColumnDef* ObjectTypeDef::FindColumn(absl::string_view name) const {
  for (const ColumnDef& c : columns) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

const std::vector<ObjectTypeDef>& AllObjectTypes() {
  static const std::vector<ObjectTypeDef>* const catalog = BuildCatalog();
  return *catalog;
}

const ObjectTypeDef* FindObjectType(absl::string_view name) {
  for (const ObjectTypeDef& def : AllObjectTypes()) {
    if (def.object_type == name || def.table == name) return &def;
  }
  return nullptr;
}

std::string KnownObjectTypeNames() {
  std::vector<std::string> names;
  for (const ObjectTypeDef& def : AllObjectTypes()) names.push_back(def.object_type);
  return absl::StrJoin(names, ", ");
}

const char* ColumnTypeName(ColumnType type) {
  switch (type) {
    case ColumnType::kText:
      return "text";
    case ColumnType::kUuid:
      return "uuid";
    case ColumnType::kTimestamp:
      return "timestamp";
    case ColumnType::kInteger:
      return "integer";
    case ColumnType::kBoolean:
      return "boolean";
  }
  return "unknown";
}

}  // namespace pulsesync
